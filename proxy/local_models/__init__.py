"""In-process local models (`kind: local` providers), served with Hugging Face transformers.

Nothing here imports torch or transformers until a model is actually loaded, so the gateway runs
without the optional `local` extra (`pip install -e .[local]`).

Public entry points:
- ``runtime_for(provider)``: the per-provider runtime the `local` upstream adapter generates with.
- ``status(provider_id)``: loaded/unloaded, memory, tokens/s and queue state, for the dashboard tile.
- ``bench_direct(model_ref, prompt, max_new_tokens)``: the same model through plain transformers,
  for `make bench`'s gateway-vs-direct comparison.
"""

from proxy.local_models.bench import bench_direct
from proxy.local_models.options import EXTRA_INSTALL, LocalOptions, LocalOptionsError, check_local_options
from proxy.local_models.runtime import runtime_for, status, unload_all

__all__ = [
    "EXTRA_INSTALL", "LocalOptions", "LocalOptionsError", "bench_direct", "check_local_options", "runtime_for",
    "status", "unload_all",
]
