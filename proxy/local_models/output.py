"""Incremental clean-up of generated text: cut at stop strings, divert tool-call markup.

Runs on each piece of text as the model produces it, so a stream never shows the start of a stop string
or of a `<tool_call>` block before it knows what it is (a possible prefix is held back until resolved).
Tool calls use the Hermes/Qwen markup most tool-capable chat templates ask for:
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.
"""

from __future__ import annotations

import json
import re
import uuid

from proxy.canonical import ToolCall

TOOL_OPEN = "<tool_call>"
_TOOL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def _held_prefix(text: str, markers: list[str]) -> int:
    """Length of the longest end of `text` that could begin one of the markers."""
    longest = 0
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), longest, -1):
            if text.endswith(marker[:size]):
                longest = size
                break
    return longest


def parse_tool_calls(markup: str) -> tuple[list[ToolCall], str]:
    """Tool calls found in `<tool_call>` blocks, and any text that was not a well-formed call."""
    calls: list[ToolCall] = []
    leftover: list[str] = []
    for match in _TOOL_BLOCK.finditer(markup):
        try:
            data = json.loads(match.group(1))
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            leftover.append(match.group(0))
            continue
        arguments = data.get("arguments", data.get("parameters", {}))
        text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        calls.append(ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=data["name"], arguments=text))
    return calls, "".join(leftover)


class OutputFilter:
    def __init__(self, stop: list[str], tools: bool) -> None:
        self.stop = [s for s in stop if s]
        self.markers = self.stop + ([TOOL_OPEN] if tools else [])
        self.tools = tools
        self.pending = ""  # text held back: it may be the start of a marker
        self.tool_markup = ""
        self.stopped = False  # a stop string was seen; the generation may halt

    def feed(self, text: str) -> str:
        """Text that is safe to show now."""
        if self.stopped:
            return ""
        if self.tool_markup:
            self.tool_markup += text
            return ""
        buffer = self.pending + text
        cut = min((i for i in (buffer.find(s) for s in self.stop) if i >= 0), default=-1)
        tool_at = buffer.find(TOOL_OPEN) if self.tools else -1
        if tool_at >= 0 and (cut < 0 or tool_at < cut):
            self.pending, self.tool_markup = "", buffer[tool_at:]
            return buffer[:tool_at]
        if cut >= 0:
            self.pending, self.stopped = "", True
            return buffer[:cut]
        hold = _held_prefix(buffer, self.markers)
        self.pending = buffer[len(buffer) - hold:] if hold else ""
        return buffer[: len(buffer) - hold]

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The last text to show, and the tool calls the model made."""
        tail, self.pending = self.pending, ""
        if not self.tool_markup:
            return tail, []
        calls, leftover = parse_tool_calls(self.tool_markup)
        return tail + leftover, calls
