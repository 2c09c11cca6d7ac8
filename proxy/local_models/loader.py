"""Loading a local model with transformers. Runs in a worker thread: loading takes seconds."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.local_models.options import LocalOptions

log = logging.getLogger(__name__)

# Rendered into the chat template to learn whether the template shows tool definitions to the model.
_PROBE_TOOL = {
    "type": "function",
    "function": {"name": "ds2api_probe_tool", "description": "probe", "parameters": {"type": "object", "properties": {}}},
}
# End-of-turn markers of common chat templates; generation stops at any of them besides the model's EOS.
_END_OF_TURN = ("<|im_end|>", "<end_of_utterance>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


@dataclass(slots=True)
class LoadedModel:
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any
    processor: Any | None  # vision-language models only
    vision: bool
    supports_tools: bool
    stop_token_ids: list[int]
    memory_bytes: int
    load_seconds: float

    def render(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        """The prompt text the model's own chat template makes of these messages."""
        templater = self.processor if self.vision else self.tokenizer
        kwargs = {"tools": tools} if tools else {}
        return templater.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)


def is_vision_folder(options: LocalOptions) -> bool:
    if options.vision is not None:
        return options.vision
    if options.gguf_file:
        return False
    try:
        config = json.loads((Path(options.folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return "vision_config" in config


def _torch_dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def _stop_token_ids(model, tokenizer) -> list[int]:
    ids: set[int] = set()
    for source in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list):
            ids.update(i for i in source if isinstance(i, int))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[token] for token in _END_OF_TURN if token in vocab)
    return sorted(ids)


def _probe_tools(loaded: LoadedModel) -> bool:
    """True when the chat template renders tool definitions (so the model is actually shown them)."""
    content: Any = [{"type": "text", "text": "hi"}] if loaded.vision else "hi"
    try:
        return "ds2api_probe_tool" in loaded.render([{"role": "user", "content": content}], [_PROBE_TOOL])
    except Exception as exc:  # a template that chokes on tools does not support them; say why in the log
        log.info("chat template of %s does not render tools: %s", type(loaded.model).__name__, exc)
        return False


def load_model(options: LocalOptions) -> LoadedModel:
    """Load the model, its tokenizer (and processor), in eval mode. Blocking; call from a worker thread."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    started = time.perf_counter()
    dtype = _torch_dtype(options.dtype)
    vision = is_vision_folder(options)
    if vision:
        processor = AutoProcessor.from_pretrained(options.folder)
        tokenizer = processor.tokenizer
        model = AutoModelForImageTextToText.from_pretrained(options.folder, dtype=dtype)
    else:
        processor = None
        gguf = {"gguf_file": options.gguf_file} if options.gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(options.folder, **gguf)
        model = AutoModelForCausalLM.from_pretrained(options.folder, dtype=dtype, **gguf)
    model.eval()
    templater = processor if vision else tokenizer
    if not getattr(templater, "chat_template", None):
        raise ValueError(f"{options.reference} has no chat template")
    loaded = LoadedModel(
        model=model, tokenizer=tokenizer, processor=processor, vision=vision, supports_tools=False,
        stop_token_ids=_stop_token_ids(model, tokenizer), memory_bytes=int(model.get_memory_footprint()),
        load_seconds=time.perf_counter() - started,
    )
    loaded.supports_tools = _probe_tools(loaded)
    log.info("loaded local model %s (%s, %.1f s, %d MB)", options.reference, type(model).__name__,
             loaded.load_seconds, loaded.memory_bytes // 2**20)
    return loaded
