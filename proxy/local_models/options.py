"""The options of a `kind: local` provider, validated without importing torch.

A local provider has no base URL; its `options` name the model instead:

    options:
      model: /srv/models/SmolLM2-360M-Instruct        # a saved transformers folder, or a .gguf file
      gguf_file: model.Q4_K_M.gguf                     # optional: a GGUF file inside `model`
      dtype: bfloat16                                  # bfloat16 (default) | float16 | float32 | auto
      max_new_tokens: 1024                             # cap on generated tokens per request
      max_concurrency: 1                               # generations at once; more requests wait in line
      idle_unload_seconds: 0                           # free the memory after this long unused (0: never)
      vision: true                                     # optional: image-text model (default: from config.json)
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXTRA_INSTALL = "pip install -e .[local]"
# Modules the `local` extra provides (pillow imports as PIL).
EXTRA_MODULES = ("torch", "transformers", "accelerate", "gguf", "PIL")
DTYPES = {
    "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
    "fp32": "float32", "float32": "float32", "auto": "auto",
}
FIELDS = ("model", "gguf_file", "dtype", "max_new_tokens", "max_concurrency", "idle_unload_seconds", "vision")


class LocalOptionsError(ValueError):
    """A local provider's options are unusable; the message names the option."""


def missing_extra() -> list[str]:
    """Modules of the `local` extra that are not installed (found without importing them)."""
    return [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]


def extra_missing_message(missing: list[str]) -> str:
    return (
        f"local models need the optional 'local' extra, which is not installed (missing: {', '.join(missing)}); "
        f"install it with: {EXTRA_INSTALL}"
    )


def _positive_int(raw: dict, key: str, default: int) -> int:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise LocalOptionsError(f"options.{key} must be a whole number >= 1")
    return value


@dataclass(frozen=True, slots=True)
class LocalOptions:
    folder: str  # the folder from_pretrained() reads
    gguf_file: str | None
    dtype: str = "bfloat16"
    max_new_tokens: int = 1024
    max_concurrency: int = 1
    idle_unload_seconds: float = 0.0
    vision: bool | None = None  # None: decided from the model's config

    @classmethod
    def parse(cls, raw: Any, *, check_paths: bool = True) -> LocalOptions:
        if not isinstance(raw, dict):
            raise LocalOptionsError("options must be a mapping naming at least `model`")
        unknown = sorted(set(raw) - set(FIELDS))
        if unknown:
            raise LocalOptionsError(f"options.{unknown[0]} is not a local model option (allowed: {', '.join(FIELDS)})")
        model = raw.get("model")
        if not isinstance(model, str) or not model.strip():
            raise LocalOptionsError("options.model is required: a saved transformers model folder or a .gguf file")
        gguf_file = raw.get("gguf_file") or None
        if gguf_file is not None and (not isinstance(gguf_file, str) or "/" in gguf_file or "\\" in gguf_file):
            raise LocalOptionsError("options.gguf_file must be the name of a .gguf file inside options.model")
        path = Path(model.strip()).expanduser()
        if path.suffix.lower() == ".gguf" and gguf_file is None:
            folder, gguf_file = path.parent, path.name
        else:
            folder = path
        if check_paths:
            if not folder.is_dir():
                raise LocalOptionsError(f"options.model: {model!r} is not an existing folder or .gguf file")
            if gguf_file is not None and not (folder / gguf_file).is_file():
                raise LocalOptionsError(f"options.gguf_file: {folder / gguf_file} does not exist")
            if gguf_file is None and not (folder / "config.json").is_file():
                raise LocalOptionsError(f"options.model: {folder} has no config.json (not a saved transformers model)")
        dtype = raw.get("dtype") or "bfloat16"
        if not isinstance(dtype, str) or dtype.lower() not in DTYPES:
            raise LocalOptionsError(f"options.dtype must be one of {', '.join(sorted(set(DTYPES.values())))}")
        idle = raw.get("idle_unload_seconds") or 0
        if not isinstance(idle, int | float) or isinstance(idle, bool) or idle < 0:
            raise LocalOptionsError("options.idle_unload_seconds must be a number >= 0 (0: never unload)")
        vision = raw.get("vision")
        if vision is not None and not isinstance(vision, bool):
            raise LocalOptionsError("options.vision must be true or false")
        if vision and gguf_file is not None:
            raise LocalOptionsError("options.vision: GGUF files load as text-only models")
        return cls(
            folder=str(folder), gguf_file=gguf_file, dtype=DTYPES[dtype.lower()],
            max_new_tokens=_positive_int(raw, "max_new_tokens", 1024),
            max_concurrency=_positive_int(raw, "max_concurrency", 1),
            idle_unload_seconds=float(idle), vision=vision,
        )

    @property
    def reference(self) -> str:
        """The model as a user would name it: a folder, or a .gguf file path."""
        return str(Path(self.folder) / self.gguf_file) if self.gguf_file else self.folder


def check_local_options(raw: Any) -> dict:
    """Validate a local provider's options for saving: the extra is installed and the model exists."""
    missing = missing_extra()
    if missing:
        raise LocalOptionsError(extra_missing_message(missing))
    LocalOptions.parse(raw)
    return dict(raw)
