"""LiteLLM's proxy in front of the same fake upstream, measured in the same run (`--with-litellm`).

Installed into its own venv (bench/.litellm-venv): the litellm wheel plus the requirements its `proxy`
extra lists, minus `litellm-proxy`, which the registry does not have. Versions 1.82.7 and 1.82.8 were
compromised releases and must never be installed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.gateway_config import UPSTREAM_KEY
from bench.processes import ROOT, Server, free_port

VERSION = "1.110.2"
VENV = ROOT / "bench" / ".litellm-venv"
MASTER_KEY = "sk-litellm-bench-master"
FORBIDDEN = {"1.82.7", "1.82.8"}

# Prints the `proxy` extra's requirements (one per line) whose markers hold on this interpreter.
LIST_PROXY_REQUIREMENTS = """
import importlib.metadata
from packaging.requirements import Requirement
for raw in importlib.metadata.requires("litellm") or []:
    req = Requirement(raw)
    if req.marker and req.marker.evaluate({"extra": "proxy"}) and not req.marker.evaluate({"extra": ""}):
        if req.name != "litellm-proxy":
            req.marker = None
            print(str(req))
"""


def _install_each(pip: list[str], requirements: list[str]) -> list[str]:
    """Install what the registry has: a pin it lacks falls back to the newest release; returns what was skipped."""
    skipped = []
    for requirement in requirements:
        if subprocess.run([*pip, requirement], capture_output=True).returncode == 0:
            continue
        name = requirement.split("==")[0].split(">")[0].split("<")[0].split("[")[0].strip()
        if subprocess.run([*pip, name], capture_output=True).returncode != 0:
            skipped.append(requirement)
    return skipped


def install() -> Path:
    assert VERSION not in FORBIDDEN
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    stamp = VENV / f".installed-{VERSION}"
    if not stamp.exists():
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, f"litellm=={VERSION}"], check=True)
        subprocess.run([*pip, "packaging"], check=True)
        requirements = subprocess.run([str(python), "-c", LIST_PROXY_REQUIREMENTS], capture_output=True, text=True,
                                      check=True).stdout.splitlines()
        if subprocess.run([*pip, *requirements], capture_output=True).returncode != 0:
            skipped = _install_each(pip, requirements)
            (VENV / "skipped-requirements.txt").write_text("\n".join(skipped))
        stamp.touch()
    return VENV / "bin" / "litellm"


CONFIG = """
model_list:
  - model_name: bench-model
    litellm_params: {{model: openai/bench, api_base: "{fake}/v1", api_key: "{key}"}}
  - model_name: bench-long
    litellm_params: {{model: openai/long, api_base: "{fake}/v1", api_key: "{key}"}}
general_settings:
  master_key: {master}
litellm_settings:
  drop_params: true
"""


def measure_litellm(fake: Server, args, scenario_bodies, sequential, throughput) -> dict:
    try:
        binary = install()
    except subprocess.CalledProcessError as exc:
        return {"error": f"install failed: {exc}"}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(CONFIG.format(fake=fake.url, key=UPSTREAM_KEY, master=MASTER_KEY))
    port = free_port()
    server = Server("litellm", [str(binary), "--config", handle.name, "--host", "127.0.0.1", "--port", str(port),
                                "--num_workers", str(args.workers)], port, ready_path="/health/liveliness",
                    # Its price map is bundled; without this it tries the network first at every start.
                    env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
    try:
        server.start(timeout=180)
        time.sleep(2)
        headers = {"authorization": f"Bearer {MASTER_KEY}"}
        plain, streamed = scenario_bodies(False)["gateway"], scenario_bodies(True)["gateway"]
        result = {
            "version": VERSION,
            "workers": args.workers,
            "sequential": sequential(server.url, "/v1/chat/completions", headers, plain, max(args.sequential // 5, 50)),
            "streaming": sequential(server.url, "/v1/chat/completions", headers, streamed,
                                    max(args.sequential // 20, 20), warmup=5),
        }
        peak = max(server.worker_rss_mb() or [0])
        result["throughput"] = throughput(server.url, "/v1/chat/completions", headers, plain, 50, args.seconds)
        result["rss_under_load_mb"] = round(max(peak, *server.worker_rss_mb()), 1)
        return result
    except RuntimeError as exc:
        return {"error": str(exc)[:300]}
    finally:
        server.stop()
