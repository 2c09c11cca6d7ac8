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

LIST_PROXY_REQUIREMENTS = """
import importlib.metadata, re
for req in importlib.metadata.requires("litellm") or []:
    if "extra == 'proxy'" in req or 'extra == "proxy"' in req:
        name = re.split(r"[ ;<>=!~\\[]", req, maxsplit=1)[0]
        if name != "litellm-proxy":
            print(req.split(";")[0].strip())
"""


def install() -> Path:
    assert VERSION not in FORBIDDEN
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    stamp = VENV / f".installed-{VERSION}"
    if not stamp.exists():
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, f"litellm=={VERSION}"], check=True)
        requirements = subprocess.run([str(python), "-c", LIST_PROXY_REQUIREMENTS], capture_output=True, text=True,
                                      check=True).stdout.split()
        extra = [r for r in requirements if r]
        subprocess.run([*pip, *extra], check=True)
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
                                "--num_workers", str(args.workers)], port, ready_path="/health/liveliness")
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
