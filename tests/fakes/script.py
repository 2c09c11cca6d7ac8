"""The scripted "model" behind every wire format of the fake upstream.

Each wire module turns its vendor request into a `Prompt`; `plan_reply` decides what the model
says (a `Plan`); the wire module then renders that plan in its own format. The rules are
documented in `tests.fakes.upstream`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from dataclasses import dataclass, field

TOOL_ARGS = ({"city": "Paris", "unit": "celsius"}, {"city": "Tokyo", "unit": "celsius"})
DEFAULT_TOOL = "get_weather"
TOKENS_PER_IMAGE = 10
TOKENS_PER_TOOL_CALL = 10
LONG_WORDS = 200
HUGE_PIECE = 16384

_PIECE_BOUNDARY = re.compile(r"(?<=\s)(?=\S)")


class BadRequest(Exception):
    """The request is not valid for its protocol; rendered as that vendor's 400."""


@dataclass(slots=True)
class Prompt:
    model: str
    texts: list[str] = field(default_factory=list)
    last_user_text: str = ""
    images: int = 0
    tool_names: list[str] = field(default_factory=list)
    tool_result: str | None = None
    max_tokens: int | None = None


@dataclass(slots=True)
class ToolCall:
    index: int
    name: str
    arguments: dict
    arguments_json: str

    def fragments(self) -> list[str]:
        return fragments(self.arguments_json)


@dataclass(slots=True)
class Plan:
    text: str
    pieces: list[str]
    reasoning: str | None
    reasoning_pieces: list[str]
    tool_calls: list[ToolCall]
    finish: str  # "stop" | "length" | "tool"
    prompt_tokens: int
    text_tokens: int
    reasoning_tokens: int
    tool_tokens: int
    cached_tokens: int

    @property
    def completion_tokens(self) -> int:
        """Everything the model generated: visible text, reasoning and tool calls."""
        return self.text_tokens + self.reasoning_tokens + self.tool_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def words(text: str) -> int:
    return len(text.split())


def split_pieces(text: str) -> list[str]:
    """One piece per word, trailing whitespace kept, so the pieces join back to `text`."""
    return [p for p in _PIECE_BOUNDARY.split(text) if p]


def fragments(text: str) -> list[str]:
    """Split a string into 3-, 4- and 5-character fragments (cycling), as streamed tool args."""
    out, i, sizes = [], 0, (3, 4, 5)
    while i < len(text):
        size = sizes[len(out) % 3]
        out.append(text[i : i + size])
        i += size
    return out


def prompt_tokens(prompt: Prompt) -> int:
    return max(1, sum(words(t) for t in prompt.texts)) + TOKENS_PER_IMAGE * prompt.images


def plan_reply(prompt: Prompt, huge_size: int | None = None) -> Plan:
    model = prompt.model
    reasoning = None
    if "reason" in model:
        reasoning = "thinking about: " + prompt.last_user_text
    tool_calls: list[ToolCall] = []
    wants_tools = ("tool" in model or "parallel" in model) and prompt.tool_result is None
    if huge_size is not None:
        unit = "huge "
        text = (unit * (huge_size // len(unit) + 1))[:huge_size]
        pieces = [text[i : i + HUGE_PIECE] for i in range(0, len(text), HUGE_PIECE)]
        wants_tools = False
    elif wants_tools:
        text, pieces = "", []
    elif prompt.tool_result is not None:
        text = "echo: " + prompt.tool_result
        pieces = split_pieces(text)
    elif "long" in model:
        text = " ".join(f"w{i}" for i in range(LONG_WORDS))
        pieces = split_pieces(text)
    else:
        text = "echo: " + prompt.last_user_text
        if prompt.images:
            text += f" [images: {prompt.images}]"
        pieces = split_pieces(text)
    finish = "stop"
    if wants_tools:
        name = prompt.tool_names[0] if prompt.tool_names else DEFAULT_TOOL
        for i in range(2 if "parallel" in model else 1):
            args = dict(TOOL_ARGS[i])
            tool_calls.append(ToolCall(i, name, args, json.dumps(args)))
        finish = "tool"
    text_tokens = words(text)
    if prompt.max_tokens is not None and huge_size is None and text_tokens > max(1, prompt.max_tokens):
        limit = max(1, prompt.max_tokens)
        pieces = pieces[:limit]
        pieces[-1] = pieces[-1].rstrip()
        text = "".join(pieces)
        text_tokens = limit
        finish = "length"
    p_tokens = prompt_tokens(prompt)
    return Plan(
        text=text,
        pieces=pieces,
        reasoning=reasoning,
        reasoning_pieces=split_pieces(reasoning) if reasoning else [],
        tool_calls=tool_calls,
        finish=finish,
        prompt_tokens=p_tokens,
        text_tokens=text_tokens,
        reasoning_tokens=words(reasoning) if reasoning else 0,
        tool_tokens=TOKENS_PER_TOOL_CALL * len(tool_calls),
        cached_tokens=p_tokens // 2 if "cached" in model else 0,
    )


def embedding(text: str, dims: int = 8) -> list[float]:
    """A deterministic unit vector derived from SHA-256 of the text."""
    raw = b""
    counter = 0
    while len(raw) < dims:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [b / 127.5 - 1.0 for b in raw[:dims]]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in values]


def embedding_base64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def signature(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest() * 2).decode()
