"""A canonical request -> the model's chat-template prompt, its images, and generation settings.

Runs in a worker thread (it may decode or fetch images and tokenizes the prompt).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from proxy.canonical import CanonicalRequest, GatewayError, ImagePart, TextPart, ToolCall, ToolResult
from proxy.local_models.images import to_pil
from proxy.local_models.loader import LoadedModel
from proxy.local_models.options import LocalOptions


@dataclass(slots=True)
class Prepared:
    inputs: dict[str, Any]  # tensors for model.generate
    prompt_tokens: int
    max_new_tokens: int
    sampling: dict[str, Any]
    stop: list[str] = field(default_factory=list)
    tools_offered: bool = False


def _content(loaded: LoadedModel, items: list[str | None]) -> Any:
    """Text models' templates take a string; vision templates take typed items (None marks an image),
    kept in the client's order."""
    if not loaded.vision:
        return "\n".join(item for item in items if item is not None)
    return [{"type": "image"} if item is None else {"type": "text", "text": item} for item in items]


def _arguments(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return text


def _tool_result_text(result: ToolResult) -> str:
    return "\n".join(p.text for p in result.content if isinstance(p, TextPart))


def _messages(loaded: LoadedModel, request: CanonicalRequest) -> tuple[list[dict], list]:
    messages: list[dict] = []
    images: list = []
    if request.system:
        messages.append({"role": "system", "content": _content(loaded, [request.system])})
    for message in request.messages:
        items: list[str | None] = []
        tool_calls: list[dict] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                items.append(part.text)
            elif isinstance(part, ImagePart):
                if not loaded.vision:
                    raise GatewayError("invalid_request", "this local model does not accept images",
                                       param="messages")
                images.append(to_pil(part))
                items.append(None)
            elif isinstance(part, ToolCall):
                tool_calls.append({"type": "function", "id": part.id,
                                   "function": {"name": part.name, "arguments": _arguments(part.arguments)}})
            elif isinstance(part, ToolResult):
                messages.append({"role": "tool", "tool_call_id": part.tool_call_id, "name": part.name or "",
                                 "content": _content(loaded, [_tool_result_text(part)])})
            # Reasoning parts from earlier turns are not shown to the model again.
        if items or tool_calls:
            entry: dict[str, Any] = {"role": message.role, "content": _content(loaded, items)}
            if tool_calls:
                entry["tool_calls"] = tool_calls
            messages.append(entry)
    return messages, images


def _uses_tools(request: CanonicalRequest) -> bool:
    return bool(request.tools) or any(
        isinstance(p, ToolCall | ToolResult) for m in request.messages for p in m.parts
    )


def _tools(loaded: LoadedModel, request: CanonicalRequest) -> list[dict]:
    if not _uses_tools(request):
        return []
    if not loaded.supports_tools:
        raise GatewayError("invalid_request", "this local model's chat template does not support tools",
                           param="tools")
    if request.tool_choice is not None and request.tool_choice.mode == "none":
        return []
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters}} for t in request.tools]


def _sampling(request: CanonicalRequest) -> dict[str, Any]:
    """No temperature: the model's own generation defaults. Zero: greedy. Otherwise: sampling."""
    if request.temperature is None:
        return {}
    if request.temperature == 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    sampling = {"do_sample": True, "temperature": request.temperature}
    if request.top_p is not None:
        sampling["top_p"] = request.top_p
    return sampling


def prepare(loaded: LoadedModel, request: CanonicalRequest, options: LocalOptions) -> Prepared:
    tools = _tools(loaded, request)
    messages, images = _messages(loaded, request)
    if not messages:
        raise GatewayError("invalid_request", "the request has no messages", param="messages")
    from jinja2 import TemplateError

    try:
        prompt = loaded.render(messages, tools or None)
    except TemplateError as exc:  # e.g. a template that refuses a system prompt or an unknown role
        raise GatewayError("invalid_request", f"this local model's chat template refused the conversation: {exc}",
                           param="messages") from None
    if loaded.vision:
        try:
            inputs = loaded.processor(text=prompt, images=[images] if images else None, return_tensors="pt")
        except ValueError as exc:  # the processor checks images against the image slots the template made
            raise GatewayError("invalid_request", f"this local model cannot take these images: {exc}",
                               param="messages") from None
    else:
        # The template already placed any BOS token it wants.
        inputs = loaded.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    max_new = min(request.max_tokens or options.max_new_tokens, options.max_new_tokens)
    return Prepared(
        inputs=dict(inputs), prompt_tokens=int(inputs["input_ids"].shape[-1]), max_new_tokens=max_new,
        sampling=_sampling(request), stop=[s for s in request.stop if s], tools_offered=bool(tools),
    )
