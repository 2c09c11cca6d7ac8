"""Gemini generateContent: the inbound protocol (`/{v1,v1beta}/models/{model}:generateContent` and
`:streamGenerateContent`). Parts convert to and from canonical parts here; the `gemini` upstream kind
(`gemini_upstream`) and the stream codecs (`gemini_stream`) reuse these conversions.

Gemini has no tool-call ids: a call gets a stable id derived from its name, arguments and position, and
a function response is matched to the earliest unanswered call of the same name.
"""

import hashlib
import secrets
from collections.abc import Callable
from typing import Any

import orjson

from proxy.adapters import register_client
from proxy.adapters.anthropic import message_with_param
from proxy.adapters.base import ClientProtocol, InboundCall, StreamEncoder
from proxy.adapters.signatures import from_gemini_client, to_gemini_client
from proxy.adapters.validation import (
    check_number,
    check_positive_int,
    check_string_list,
    require_dict,
    require_list,
    require_str,
)
from proxy.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    GatewayError,
    ImagePart,
    Message,
    Part,
    ReasoningConfig,
    ReasoningPart,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
    Usage,
)

STATUS_NAMES = {
    "invalid_request": "INVALID_ARGUMENT",
    "authentication": "UNAUTHENTICATED",
    "permission": "PERMISSION_DENIED",
    "not_found": "NOT_FOUND",
    "too_large": "INVALID_ARGUMENT",
    "rate_limit": "RESOURCE_EXHAUSTED",
    "budget_exceeded": "RESOURCE_EXHAUSTED",
    "timeout": "DEADLINE_EXCEEDED",
    "overloaded": "UNAVAILABLE",
    "upstream": "UNAVAILABLE",
    "internal": "INTERNAL",
}
FINISH_FROM_CANONICAL = {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS",
                         "content_filter": "SAFETY", "error": "OTHER"}
FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE",
            "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR"}
IGNORED_PART_FIELDS = {"videoMetadata", "video_metadata", "thought", "thoughtSignature", "thought_signature",
                       "mediaResolution", "media_resolution"}
LEVEL_TO_EFFORT = {"MINIMAL": "minimal", "LOW": "low", "MEDIUM": "medium", "HIGH": "high", "XHIGH": "xhigh"}


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


def gemini_error_body(err: GatewayError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": err.status, "message": message_with_param(err),
                             "status": STATUS_NAMES.get(err.kind, "INTERNAL")}
    if err.retry_after is not None:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                             "retryDelay": f"{max(1, round(err.retry_after))}s"}]
    return {"error": error}


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


# --- inbound ---------------------------------------------------------------------------------------


def _schema(schema: Any) -> Any:
    """Gemini's OpenAPI-subset schema (upper-case types, `nullable`) as JSON Schema."""
    if isinstance(schema, list):
        return [_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _schema(value) for key, value in schema.items() if key not in ("nullable", "propertyOrdering")}
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = kind.lower()
        if schema.get("nullable"):
            out["type"] = [kind.lower(), "null"]
    return out


def _system(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw or None
    raw = require_dict(raw, "systemInstruction")
    texts = [str(p.get("text") or "") for p in require_list(raw.get("parts") or [], "systemInstruction.parts")
             if isinstance(p, dict)]
    return "\n\n".join(t for t in texts if t) or None


def parse_contents(raw: Any) -> list[Message]:
    messages: list[Message] = []
    pending: list[tuple[str, str]] = []
    for i, content in enumerate(require_list(raw, "contents", non_empty=True)):
        content = require_dict(content, f"contents[{i}]")
        role = content.get("role") or "user"
        if role not in ("user", "model", "function"):
            raise GatewayError("invalid_request", "role must be user or model", param=f"contents[{i}].role")
        model_turn = role == "model"
        parts = parse_parts(content.get("parts") or [], f"contents[{i}].parts", model_turn=model_turn,
                            signature=from_gemini_client, pending=pending)
        messages.append(Message("assistant" if model_turn else "user", parts))
    return messages


def _tools(body: dict) -> tuple[list[Tool], ToolChoice | None]:
    tools: list[Tool] = []
    for i, raw in enumerate(require_list(body.get("tools") or [], "tools")):
        raw = require_dict(raw, f"tools[{i}]")
        declarations = get(raw, "functionDeclarations", "function_declarations")
        others = set(raw) - {"functionDeclarations", "function_declarations"}
        if others:
            raise GatewayError("invalid_request", f"tool {sorted(others)[0]!r} is not supported by this gateway",
                               param=f"tools[{i}].{sorted(others)[0]}")
        for j, decl in enumerate(require_list(declarations or [], f"tools[{i}].functionDeclarations")):
            where = f"tools[{i}].functionDeclarations[{j}]"
            decl = require_dict(decl, where)
            schema = get(decl, "parametersJsonSchema", "parameters_json_schema")
            if schema is None:
                schema = _schema(decl.get("parameters")) if decl.get("parameters") else None
            tools.append(Tool(require_str(decl.get("name"), f"{where}.name"), str(decl.get("description") or ""),
                              schema or {"type": "object", "properties": {}}))
    config = get(body, "toolConfig", "tool_config") or {}
    calling = get(require_dict(config, "toolConfig"), "functionCallingConfig", "function_calling_config")
    if not calling:
        return tools, None
    calling = require_dict(calling, "toolConfig.functionCallingConfig")
    mode = str(calling.get("mode") or "AUTO").upper()
    allowed = check_string_list(get(calling, "allowedFunctionNames", "allowed_function_names"),
                                "toolConfig.functionCallingConfig.allowedFunctionNames")
    if allowed:  # approximated elsewhere by offering only the allowed functions
        tools = [t for t in tools if t.name in allowed]
    if mode in ("ANY", "VALIDATED") and len(allowed) == 1:
        return tools, ToolChoice("tool", allowed[0])
    choices = {"AUTO": "auto", "ANY": "required", "VALIDATED": "auto", "NONE": "none", "MODE_UNSPECIFIED": "auto"}
    if mode not in choices:
        raise GatewayError("invalid_request", f"unknown function calling mode {mode!r}",
                           param="toolConfig.functionCallingConfig.mode")
    return tools, ToolChoice(choices[mode])


def _reasoning(config: dict) -> ReasoningConfig | None:
    thinking = get(config, "thinkingConfig", "thinking_config")
    if thinking is None:
        return None
    thinking = require_dict(thinking, "generationConfig.thinkingConfig")
    budget = get(thinking, "thinkingBudget", "thinking_budget")
    level = get(thinking, "thinkingLevel", "thinking_level")
    include = bool(get(thinking, "includeThoughts", "include_thoughts"))
    if budget == 0:
        return None
    effort = LEVEL_TO_EFFORT.get(str(level).upper()) if level else None
    if isinstance(budget, int) and budget > 0:
        return ReasoningConfig(effort=effort, budget_tokens=budget, include_thoughts=include)
    return ReasoningConfig(effort=effort or "medium", include_thoughts=include)


def _response_format(config: dict) -> ResponseFormat | None:
    mime = get(config, "responseMimeType", "response_mime_type")
    json_schema = get(config, "responseJsonSchema", "response_json_schema")
    schema = get(config, "responseSchema", "response_schema")
    if mime in (None, "text/plain") and json_schema is None and schema is None:
        return None
    if mime not in (None, "application/json"):
        raise GatewayError("invalid_request", f"responseMimeType {mime!r} is not supported by this gateway",
                           param="generationConfig.responseMimeType")
    if json_schema is not None or schema is not None:
        return ResponseFormat("json_schema", json_schema if json_schema is not None else _schema(schema))
    return ResponseFormat("json_object")


def _generation_extras(config: dict) -> dict[str, Any]:
    """Sampling knobs other upstreams also understand, under the names their adapters look for."""
    extra: dict[str, Any] = {}
    for camel, snake, key in (("topK", "top_k", "top_k"), ("seed", "seed", "seed"),
                              ("presencePenalty", "presence_penalty", "presence_penalty"),
                              ("frequencyPenalty", "frequency_penalty", "frequency_penalty")):
        value = get(config, camel, snake)
        if value is not None:
            extra[key] = value
    count = get(config, "candidateCount", "candidate_count")
    if count not in (None, 1):
        raise GatewayError("invalid_request", "candidateCount above 1 is not supported by this gateway",
                           param="generationConfig.candidateCount")
    return extra


class GeminiClient(ClientProtocol):
    name = "gemini"

    def parse_request(self, body: Any, call: InboundCall) -> CanonicalRequest:
        body = require_dict(body, "body")
        model = call.path_model or body.get("model")
        model = require_str(model, "model")
        config = require_dict(get(body, "generationConfig", "generation_config") or {}, "generationConfig")
        tools, tool_choice = _tools(body)
        extra = _generation_extras(config)
        extra["gemini_body"] = body
        return CanonicalRequest(
            model=model.removeprefix("models/"),
            messages=parse_contents(body.get("contents")),
            system=_system(get(body, "systemInstruction", "system_instruction")),
            stream=bool(call.stream),
            max_tokens=check_positive_int(get(config, "maxOutputTokens", "max_output_tokens"),
                                          "generationConfig.maxOutputTokens"),
            temperature=check_number(config.get("temperature"), "generationConfig.temperature", 0, 2),
            top_p=check_number(get(config, "topP", "top_p"), "generationConfig.topP", 0, 1),
            stop=check_string_list(get(config, "stopSequences", "stop_sequences"), "generationConfig.stopSequences"),
            tools=tools,
            tool_choice=tool_choice,
            response_format=_response_format(config),
            reasoning=_reasoning(config),
            extra=extra,
        )

    def render_response(self, response: CanonicalResponse, request: CanonicalRequest) -> dict[str, Any]:
        include = bool(request.reasoning and request.reasoning.include_thoughts)
        candidate = {"content": {"parts": render_model_parts(response.parts, include_thoughts=include),
                                 "role": "model"},
                     "finishReason": FINISH_FROM_CANONICAL.get(response.finish_reason, "STOP"), "index": 0}
        return {"candidates": [candidate], "usageMetadata": usage_to_gemini(response.usage),
                "modelVersion": request.model, "responseId": response_id()}

    def stream_encoder(self, request: CanonicalRequest, call: InboundCall) -> StreamEncoder:
        from proxy.adapters.gemini_stream import GeminiEncoder

        return GeminiEncoder(request, sse=call.sse)

    def render_error(self, err: GatewayError) -> dict[str, Any]:
        return gemini_error_body(err)


def response_id() -> str:
    """Gemini response ids are opaque url-safe strings; the upstream's own id may name another vendor."""
    return secrets.token_urlsafe(17)[:23]


register_client(GeminiClient())
