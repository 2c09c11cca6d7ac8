"""The `gemini` upstream kind: canonical requests as Gemini API generateContent calls.

A request that arrived in Gemini's own format is forwarded as the client wrote it, so everything the
canonical model does not carry (safety settings, cached content, thought signatures in place) survives.
"""

import mimetypes
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from proxy.adapters import register_upstream
from proxy.adapters.base import StreamDecoder, UpstreamAdapter, UpstreamRequest
from proxy.adapters.gemini_parts import finish_to_canonical, get, parse_parts, usage_from_gemini
from proxy.adapters.gemini_stream import GeminiDecoder, error_from_gemini
from proxy.adapters.signatures import from_gemini, gemini_native
from proxy.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    GatewayError,
    ImagePart,
    Message,
    ReasoningConfig,
    ReasoningPart,
    TextPart,
    ToolCall,
    ToolResult,
)

# Documented by Google for function calls that did not come from Gemini (history from another model):
# without a signature, Gemini 3 models refuse the request.
SKIP_SIGNATURE = "skip_thought_signature_validator"
EFFORT_BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768, "max": 32768}
CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}


def model_url(base_url: str, model: str, method: str) -> str:
    base = base_url.rstrip("/")
    for suffix in ("/v1beta", "/v1"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return f"{base}/v1beta/models/{quote(model.removeprefix('models/'), safe='-._~')}:{method}"


def gemini_headers(secret: str, extra_headers: dict) -> dict[str, str]:
    return {"x-goog-api-key": secret, "content-type": "application/json", **extra_headers}


def _media_type(part: ImagePart) -> str:
    if part.media_type:
        return part.media_type
    guessed, _ = mimetypes.guess_type(urlsplit(part.url or "").path)
    return guessed or "image/jpeg"


def _media(part: ImagePart) -> dict[str, Any]:
    if part.data is not None:
        return {"inlineData": {"mimeType": part.media_type or "image/png", "data": part.data}}
    return {"fileData": {"mimeType": _media_type(part), "fileUri": part.url or ""}}


def _response_object(result: ToolResult) -> dict[str, Any]:
    text = "".join(p.text for p in result.content if isinstance(p, TextPart))
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict) and not result.is_error:
        return value
    return {"error" if result.is_error else "result": text}


def _content_parts(message: Message, names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    signature: str | None = None
    signed_call = False
    first_call: dict[str, Any] | None = None
    for part in message.parts:
        if isinstance(part, ReasoningPart):
            # Thought text is not sent back (Gemini ignores it); its signature goes on the next part.
            signature = gemini_native(part.signature) or signature
            continue
        if isinstance(part, TextPart):
            if not part.text:
                continue
            item: dict[str, Any] = {"text": part.text}
        elif isinstance(part, ImagePart):
            item = _media(part)
        elif isinstance(part, ToolCall):
            names[part.id] = part.name
            try:
                args = orjson.loads(part.arguments) if part.arguments.strip() else {}
            except orjson.JSONDecodeError:
                args = {}
            item = {"functionCall": {"name": part.name, "args": args if isinstance(args, dict) else {}}}
            first_call = first_call or item
            signed_call = signed_call or signature is not None
        elif isinstance(part, ToolResult):
            name = part.name or names.get(part.tool_call_id) or part.tool_call_id
            parts.append({"functionResponse": {"name": name, "response": _response_object(part)}})
            parts.extend(_media(p) for p in part.content if isinstance(p, ImagePart))
            continue
        else:
            continue
        if signature:
            item["thoughtSignature"], signature = signature, None
        parts.append(item)
    if signature and parts:
        parts[-1].setdefault("thoughtSignature", signature)
    if first_call is not None and not signed_call:
        first_call["thoughtSignature"] = SKIP_SIGNATURE
    return parts


def gemini_contents(request: CanonicalRequest) -> list[dict[str, Any]]:
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool-call id -> function name, for function responses
    for message in request.messages:
        parts = _content_parts(message, names)
        if not parts:
            continue
        role = "model" if message.role == "assistant" else "user"
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def _thinking(reasoning: ReasoningConfig) -> dict[str, Any]:
    budget = reasoning.budget_tokens or EFFORT_BUDGETS.get(reasoning.effort or "medium", 8192)
    return {"thinkingBudget": budget, "includeThoughts": reasoning.include_thoughts}


def _generation_config(request: CanonicalRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key, value in (("temperature", request.temperature), ("topP", request.top_p),
                       ("topK", request.extra.get("top_k")), ("maxOutputTokens", request.max_tokens),
                       ("seed", request.extra.get("seed")),
                       ("presencePenalty", request.extra.get("presence_penalty")),
                       ("frequencyPenalty", request.extra.get("frequency_penalty"))):
        if value is not None:
            config[key] = value
    if request.stop:
        config["stopSequences"] = request.stop
    fmt = request.response_format
    if fmt and fmt.type != "text":
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.schema is not None:
            config["responseJsonSchema"] = fmt.schema
    if request.reasoning:
        config["thinkingConfig"] = _thinking(request.reasoning)
    return config


def gemini_body(request: CanonicalRequest) -> dict[str, Any]:
    native = request.extra.get("gemini_body")
    if isinstance(native, dict):
        return native
    body: dict[str, Any] = {"contents": gemini_contents(request)}
    if request.system:
        body["systemInstruction"] = {"parts": [{"text": request.system}]}
    if request.tools:
        declarations = []
        for tool in request.tools:
            declaration: dict[str, Any] = {"name": tool.name, "parametersJsonSchema": tool.parameters}
            if tool.description:
                declaration["description"] = tool.description
            declarations.append(declaration)
        body["tools"] = [{"functionDeclarations": declarations}]
    if request.tool_choice:
        calling: dict[str, Any] = {"mode": CHOICE_MODES[request.tool_choice.mode]}
        if request.tool_choice.mode == "tool":
            calling["allowedFunctionNames"] = [request.tool_choice.name]
        body["toolConfig"] = {"functionCallingConfig": calling}
    config = _generation_config(request)
    if config:
        body["generationConfig"] = config
    return body


class GeminiUpstream(UpstreamAdapter):
    kind = "gemini"

    def build_request(self, request, *, upstream_model, base_url, secret, extra_headers) -> UpstreamRequest:
        method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        return UpstreamRequest(model_url(base_url, upstream_model, method), gemini_headers(secret, extra_headers),
                               orjson.dumps(gemini_body(request)))

    def parse_response(self, body: bytes, request: CanonicalRequest) -> CanonicalResponse:
        try:
            data = orjson.loads(body)
            candidates = data.get("candidates") or []
            candidate = candidates[0] if candidates else {}
            raw_parts = (candidate.get("content") or {}).get("parts") or []
            parts = parse_parts(raw_parts, "parts", model_turn=True, signature=from_gemini, response=True)
        except (orjson.JSONDecodeError, AttributeError, TypeError, GatewayError) as exc:
            raise GatewayError("upstream", "the provider returned an unreadable response") from exc
        finish = get(candidate, "finishReason", "finish_reason")
        if not candidates and get(data.get("promptFeedback") or {}, "blockReason", "block_reason"):
            finish = "SAFETY"
        has_calls = any(isinstance(p, ToolCall) for p in parts)
        return CanonicalResponse(
            id=str(data.get("responseId") or ""), model=str(data.get("modelVersion") or ""), parts=parts,
            finish_reason=finish_to_canonical(finish, has_calls),
            usage=usage_from_gemini(get(data, "usageMetadata", "usage_metadata")),
        )

    def stream_decoder(self, request: CanonicalRequest) -> StreamDecoder:
        return GeminiDecoder()

    def parse_error(self, status: int, headers: dict[str, str], body: bytes) -> GatewayError:
        return error_from_gemini_response(status, body)


def error_from_gemini_response(status: int, body: bytes) -> GatewayError:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, list) and data:  # some Google front ends wrap the error in an array
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        error = {"message": f"upstream returned HTTP {status}"}
    return error_from_gemini(error, status)


register_upstream(GeminiUpstream())
