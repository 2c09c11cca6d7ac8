"""Gemini's content model on the wire: parts, finish reasons and usage, to and from canonical form. Shared
by the inbound protocol (`gemini`), the `gemini` upstream kind and the stream codecs.

Gemini has no tool-call ids: a call gets a stable id derived from its name, arguments and position, and
a function response is matched to the earliest unanswered call of the same name.
"""

import hashlib
from collections.abc import Callable
from typing import Any

import orjson

from proxy.adapters.signatures import to_gemini_client
from proxy.adapters.validation import require_dict, require_list, require_str
from proxy.canonical import (
    GatewayError,
    ImagePart,
    Part,
    ReasoningPart,
    TextPart,
    ToolCall,
    ToolResult,
    Usage,
)

FINISH_FROM_CANONICAL = {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS",
                         "content_filter": "SAFETY", "refusal": "SAFETY", "error": "OTHER"}
FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE",
            "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR"}
IGNORED_PART_FIELDS = {"videoMetadata", "video_metadata", "thought", "thoughtSignature", "thought_signature",
                       "mediaResolution", "media_resolution"}

def get(obj: dict, camel: str, snake: str) -> Any:
    """A field under its JSON (camelCase) or proto (snake_case) name; the API accepts both."""
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def finish_to_canonical(reason: str | None, has_calls: bool) -> str:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in FILTERED:
        return "content_filter"
    if reason in ("MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS", "MALFORMED_RESPONSE"):
        return "error"
    return "tool_calls" if has_calls else "stop"


def call_id(name: str, arguments: str, position: int) -> str:
    """A stable id for an id-less Gemini function call: the same call always gets the same id, so
    conversation prefixes stay byte-identical (and cacheable) for providers that do use ids."""
    digest = hashlib.sha256(f"{position}\0{name}\0{arguments}".encode()).hexdigest()[:24]
    return f"call_{digest}"


def usage_to_gemini(usage: Usage) -> dict[str, Any]:
    """Gemini counts thoughts apart from candidates; canonical output tokens include them."""
    out: dict[str, Any] = {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": max(0, usage.output_tokens - usage.reasoning_tokens),
        "totalTokenCount": usage.total_tokens,
    }
    if usage.reasoning_tokens:
        out["thoughtsTokenCount"] = usage.reasoning_tokens
    if usage.cached_tokens:
        out["cachedContentTokenCount"] = usage.cached_tokens
    return out


def usage_from_gemini(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    thoughts = int(get(raw, "thoughtsTokenCount", "thoughts_token_count") or 0)
    tool_prompt = int(get(raw, "toolUsePromptTokenCount", "tool_use_prompt_token_count") or 0)
    return Usage(
        input_tokens=int(get(raw, "promptTokenCount", "prompt_token_count") or 0) + tool_prompt,
        output_tokens=int(get(raw, "candidatesTokenCount", "candidates_token_count") or 0) + thoughts,
        cached_tokens=int(get(raw, "cachedContentTokenCount", "cached_content_token_count") or 0),
        reasoning_tokens=thoughts,
    )


# --- Gemini parts -> canonical parts ---------------------------------------------------------------


def standard_base64(data: str) -> str:
    """Google accepts (and its SDK sends) URL-safe base64; other providers want the standard alphabet."""
    data = data.replace("-", "+").replace("_", "/")
    return data + "=" * (-len(data) % 4)


def _args_json(args: Any) -> str:
    return orjson.dumps(args if args is not None else {}).decode()


def _response_text(response: Any) -> str:
    return orjson.dumps(response if response is not None else {}).decode()


def parse_parts(raw_parts: Any, path: str, *, model_turn: bool, signature: Callable[[str], str],
                pending: list[tuple[str, str]] | None = None, response: bool = False) -> list[Part]:
    """One Content's parts as canonical parts. `pending` holds (id, name) of calls not yet answered, filled
    by model turns and consumed by function responses. A thoughtSignature becomes the signature of the
    reasoning just before it (or of an empty reasoning part), which is where it goes back on the way out."""
    parts: list[Part] = []
    position = 0
    for i, raw in enumerate(require_list(raw_parts, path)):
        where = f"{path}[{i}]"
        raw = require_dict(raw, where)
        sig = get(raw, "thoughtSignature", "thought_signature")
        sig = signature(sig) if isinstance(sig, str) and sig else None
        if raw.get("thought"):
            if model_turn:
                parts.append(ReasoningPart(str(raw.get("text") or ""), signature=sig))
            continue
        if sig:
            if parts and isinstance(parts[-1], ReasoningPart) and not parts[-1].signature:
                parts[-1].signature = sig
            else:
                parts.append(ReasoningPart("", signature=sig))
        inline = get(raw, "inlineData", "inline_data")
        file_data = get(raw, "fileData", "file_data")
        call = get(raw, "functionCall", "function_call")
        result = get(raw, "functionResponse", "function_response")
        if "text" in raw:
            if raw["text"]:
                parts.append(TextPart(str(raw["text"])))
        elif isinstance(inline, dict):
            data = standard_base64(require_str(inline.get("data"), f"{where}.inlineData.data"))
            parts.append(ImagePart(data=data, media_type=get(inline, "mimeType", "mime_type") or "application/octet-stream"))
        elif isinstance(file_data, dict):
            parts.append(ImagePart(url=require_str(get(file_data, "fileUri", "file_uri"), f"{where}.fileData.fileUri"),
                                   media_type=get(file_data, "mimeType", "mime_type")))
        elif isinstance(call, dict):
            name = require_str(call.get("name"), f"{where}.functionCall.name")
            arguments = _args_json(call.get("args"))
            ident = str(call.get("id") or call_id(name, arguments, position))
            position += 1
            parts.append(ToolCall(ident, name, arguments))
            if pending is not None:
                pending.append((ident, name))
        elif isinstance(result, dict):
            name = require_str(result.get("name"), f"{where}.functionResponse.name")
            parts.append(ToolResult(_answer(result.get("id"), name, pending),
                                    [TextPart(_response_text(result.get("response")))], name=name))
        elif not response and (unknown := sorted(set(raw) - IGNORED_PART_FIELDS)):
            raise GatewayError("invalid_request", f"unsupported part {unknown[0]!r}", param=f"{where}.{unknown[0]}")
    return parts


def _answer(given: Any, name: str, pending: list[tuple[str, str]] | None) -> str:
    if pending is not None:
        for n, (ident, call_name) in enumerate(pending):
            if (given and ident == given) or (not given and call_name == name):
                del pending[n]
                return ident
    return str(given) if given else call_id(name, "", 0)


# --- canonical parts -> Gemini parts (responses to a Gemini client) --------------------------------


def function_call_part(call: ToolCall) -> dict[str, Any]:
    try:
        args = orjson.loads(call.arguments) if call.arguments.strip() else {}
    except orjson.JSONDecodeError:
        args = {}
    return {"functionCall": {"name": call.name, "args": args if isinstance(args, dict) else {}}}


def render_model_parts(parts: list[Part], *, include_thoughts: bool) -> list[dict[str, Any]]:
    """Assistant output as a Gemini client expects it: thoughts only when asked for, signatures always
    (on the part that follows the reasoning they sign, or the last part)."""
    out: list[dict[str, Any]] = []
    signature: str | None = None
    for part in parts:
        if isinstance(part, ReasoningPart):
            if include_thoughts and part.text:
                out.append({"text": part.text, "thought": True})
            if part.signature:
                signature = to_gemini_client(part.signature)
            continue
        if isinstance(part, TextPart):
            item: dict[str, Any] = {"text": part.text}
        elif isinstance(part, ToolCall):
            item = function_call_part(part)
        else:
            continue
        if signature:
            item["thoughtSignature"], signature = signature, None
        out.append(item)
    if signature:
        if out:
            out[-1].setdefault("thoughtSignature", signature)
        else:
            out.append({"text": "", "thoughtSignature": signature})
    return out or [{"text": ""}]
