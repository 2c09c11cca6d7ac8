"""The "direct transformers" side of `make bench`: the same model, called without the gateway."""

from __future__ import annotations

import threading
import time
from typing import Any

from proxy.local_models.loader import LoadedModel, load_model
from proxy.local_models.options import LocalOptions

_cache: dict[tuple, LoadedModel] = {}


def bench_direct(
    model_ref: str, prompt: str, max_new_tokens: int, *, dtype: str = "bfloat16", gguf_file: str | None = None
) -> dict[str, Any]:
    """Greedy-generate `max_new_tokens` for one user message with plain transformers.

    Returns ``ttft_s`` (call to first generated text), ``tokens_per_s`` (decode speed after the first
    token, as the gateway's runtime reports it), ``output_tokens`` and ``total_s``. The model is loaded
    once per process (excluded from the timings), as a gateway worker keeps it loaded.
    """
    from transformers import TextIteratorStreamer

    options = LocalOptions.parse({"model": model_ref, "gguf_file": gguf_file, "dtype": dtype,
                                  "max_new_tokens": max_new_tokens})
    key = (options.folder, options.gguf_file, options.dtype)
    if key not in _cache:
        _cache[key] = load_model(options)
    loaded = _cache[key]
    content: Any = [{"type": "text", "text": prompt}] if loaded.vision else prompt
    text = loaded.render([{"role": "user", "content": content}])
    templater = loaded.processor if loaded.vision else loaded.tokenizer
    inputs = templater(text=text, return_tensors="pt", add_special_tokens=False)
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
    output: list = []

    def run() -> None:
        output.append(loaded.model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer,
            eos_token_id=loaded.stop_token_ids or None, pad_token_id=loaded.tokenizer.pad_token_id,
        ))

    started = time.perf_counter()
    thread = threading.Thread(target=run, name="bench-direct")
    thread.start()
    first = None
    for piece in streamer:
        if piece and first is None:
            first = time.perf_counter() - started
    thread.join()
    total = time.perf_counter() - started
    generated = int(output[0].shape[-1] - inputs["input_ids"].shape[-1]) if output else 0
    decode = total - (first or 0.0)
    return {
        "ttft_s": first,
        "tokens_per_s": (generated - 1) / decode if first is not None and generated > 1 and decode > 0 else None,
        "output_tokens": generated,
        "total_s": total,
    }
