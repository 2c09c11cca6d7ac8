"""Gemini generateContent: the inbound protocol (`/{v1,v1beta}/models/{model}:generateContent` and
`:streamGenerateContent`). Parts, finish reasons and usage convert in `gemini_parts`; the `gemini` upstream
kind is in `gemini_upstream`, the stream codecs in `gemini_stream`.
"""

import secrets
from typing import Any

from proxy.adapters import register_client
from proxy.adapters.anthropic import message_with_param
from proxy.adapters.base import ClientProtocol, InboundCall, StreamEncoder
from proxy.adapters.gemini_parts import (
    FINISH_FROM_CANONICAL,
    get,
    parse_parts,
    render_model_parts,
    usage_to_gemini,
)
from proxy.adapters.signatures import from_gemini_client
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
    Message,
    ReasoningConfig,
    ResponseFormat,
    Tool,
    ToolChoice,
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
LEVEL_TO_EFFORT = {"MINIMAL": "minimal", "LOW": "low", "MEDIUM": "medium", "HIGH": "high", "XHIGH": "xhigh"}


def gemini_error_body(err: GatewayError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": err.status, "message": message_with_param(err),
                             "status": STATUS_NAMES.get(err.kind, "INTERNAL")}
    details: list[dict[str, Any]] = []
    if err.kind == "budget_exceeded" and err.code:
        # RESOURCE_EXHAUSTED alone reads like a rate limit; google.rpc.ErrorInfo names which budget is spent
        details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": err.code.upper(),
                        "domain": "ds2api"})
    if err.retry_after is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": f"{max(1, round(err.retry_after))}s"})
    if details:
        error["details"] = details
    return {"error": error}


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
