"""Gemini (Generative Language API) wire format for the fake upstream.

Accepts both the camelCase JSON the SDKs send and the snake_case proto names the API also takes.
"""

from __future__ import annotations

from urllib.parse import parse_qs

import orjson

from tests.fakes.reply import Incoming, Reply, json_reply, sse_data
from tests.fakes.script import BadRequest, Plan, Prompt, embedding, plan_reply, prompt_tokens, words
from tests.fakes.state import FakeState, Fault

MODELS = (
    "gemini-2.5-flash",
    "fake-model",
    "fake-tool",
    "fake-reason",
    "fake-long",
    "fake-cached",
    "gemini-embedding-001",
)
FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}
STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
    529: "UNAVAILABLE",
}
MESSAGES = {
    401: "API key not valid. Please pass a valid API key.",
    403: "The caller does not have permission",
    404: "models/unknown is not found for API version v1beta.",
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
}


def _get(obj: dict, camel: str, snake: str, default: object = None) -> object:
    value = obj.get(camel)
    return obj.get(snake, default) if value is None else value


def api_key(headers: dict[bytes, bytes], query: bytes) -> str | None:
    value = headers.get(b"x-goog-api-key")
    if value:
        return value.decode("latin-1")
    if query and b"key=" in query:
        found = parse_qs(query.decode("latin-1")).get("key")
        return found[0] if found else None
    return None


def error(status: int, message: str | None = None, retry_after: float | None = None) -> Reply:
    body: dict = {
        "code": status,
        "message": message or MESSAGES.get(status, f"HTTP {status}"),
        "status": STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"),
    }
    if retry_after is not None:
        delay = f"{int(retry_after)}s" if float(retry_after).is_integer() else f"{retry_after:g}s"
        body["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]
    return json_reply({"error": body}, status)


def headers(state: FakeState, inc: Incoming, status: int) -> list[tuple[bytes, bytes]]:
    return []  # the Gemini API sends no rate-limit headers


def handle(op: str, inc: Incoming, fault: Fault | None) -> Reply:
    model = inc.model
    if op == "models":
        return json_reply({"models": [_model(m) for m in MODELS]})
    body = inc.json()
    if op == "embedContent":
        return _embeddings([body], batch=False)
    if op == "batchEmbedContents":
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise BadRequest("* BatchEmbedContentsRequest.requests: at least one request is required")
        return _embeddings(requests, batch=True)
    if op == "countTokens":
        inner = _get(body, "generateContentRequest", "generate_content_request") or body
        tokens = prompt_tokens(_prompt(inner, model))
        reply = json_reply(
            {"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]}
        )
        return reply
    if op not in ("generateContent", "streamGenerateContent"):
        raise BadRequest(f"unknown method {op}")
    prompt = _prompt(body, model)
    plan = plan_reply(prompt, fault.size if fault and fault.mode == "huge" else None)
    ident = f"fake-{inc.number}"
    if op == "generateContent":
        reply = json_reply(_response(ident, model, plan))
    elif b"alt=sse" in inc.query:
        reply = Reply(
            content_type=b"text/event-stream",
            frames=[sse_data(c, crlf=True) for c in _chunks(ident, model, plan)],
        )
    else:
        chunks = [orjson.dumps(c) for c in _chunks(ident, model, plan)]
        frames = [b"[" + chunks[0]] + [b",\r\n" + c for c in chunks[1:]] + [b"]"]
        reply = Reply(content_type=b"application/json", frames=frames)
    reply.prompt_tokens, reply.completion_tokens = plan.prompt_tokens, plan.completion_tokens
    return reply


# -- requests ------------------------------------------------------------------------------
def _parts_text(parts: list) -> tuple[str, int]:
    texts, images = [], 0
    for part in parts:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if "text" in part:
            texts.append(part["text"] or "")
        elif _get(part, "inlineData", "inline_data") or _get(part, "fileData", "file_data"):
            images += 1
    return " ".join(t for t in texts if t), images


def _function_response_text(part: dict) -> str | None:
    found = _get(part, "functionResponse", "function_response")
    if not isinstance(found, dict):
        return None
    response = found.get("response")
    if isinstance(response, dict) and len(response) == 1:
        (only,) = response.values()
        if isinstance(only, str):
            return only
    return orjson.dumps(response).decode()


def _prompt(body: dict, model: str) -> Prompt:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
    prompt = Prompt(model=model)
    system = _get(body, "systemInstruction", "system_instruction")
    if isinstance(system, str):
        prompt.texts.append(system)
    elif isinstance(system, dict):
        prompt.texts.append(_parts_text(system.get("parts") or [])[0])
    results: list[str] = []
    for content in contents:
        if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
            raise BadRequest("* GenerateContentRequest.contents: each content needs parts")
        parts = content["parts"]
        text, images = _parts_text(parts)
        results = [
            r for r in (_function_response_text(p) for p in parts if isinstance(p, dict)) if r is not None
        ]
        prompt.texts.append(" ".join([text, *results]).strip())
        prompt.images += images
        only_results = bool(results) and len(results) == len(parts)
        if content.get("role", "user") == "user" and not only_results:
            prompt.last_user_text = text
    if results:  # the last content carries function responses
        prompt.tool_result = " ".join(results)
    for tool in body.get("tools") or []:
        declarations = _get(tool, "functionDeclarations", "function_declarations") or []
        prompt.tool_names += [d["name"] for d in declarations if isinstance(d, dict) and d.get("name")]
    config = _get(body, "generationConfig", "generation_config") or {}
    limit = _get(config, "maxOutputTokens", "max_output_tokens")
    prompt.max_tokens = limit if isinstance(limit, int) else None
    return prompt


# -- responses -----------------------------------------------------------------------------
def _usage(plan: Plan) -> dict:
    usage = {
        "promptTokenCount": plan.prompt_tokens,
        "candidatesTokenCount": plan.text_tokens + plan.tool_tokens,
        "totalTokenCount": plan.total_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": plan.prompt_tokens}],
    }
    if plan.reasoning_tokens:
        usage["thoughtsTokenCount"] = plan.reasoning_tokens
    if plan.cached_tokens:
        usage["cachedContentTokenCount"] = plan.cached_tokens
    return usage


def _calls(plan: Plan) -> list[dict]:
    return [{"functionCall": {"name": c.name, "args": c.arguments}} for c in plan.tool_calls]


def _response(ident: str, model: str, plan: Plan) -> dict:
    parts: list[dict] = []
    if plan.reasoning is not None:
        parts.append({"text": plan.reasoning, "thought": True})
    if plan.text or not plan.tool_calls:
        parts.append({"text": plan.text})
    parts += _calls(plan)
    candidate = {
        "content": {"parts": parts, "role": "model"},
        "finishReason": FINISH[plan.finish],
        "index": 0,
    }
    return {
        "candidates": [candidate],
        "usageMetadata": _usage(plan),
        "modelVersion": model,
        "responseId": ident,
    }


def _chunks(ident: str, model: str, plan: Plan) -> list[dict]:
    """One chunk per reasoning word, per text word, one for all function calls; the last
    chunk carries finishReason and the full usage, the earlier ones only the prompt count."""
    groups = [[{"text": p, "thought": True}] for p in plan.reasoning_pieces]
    groups += [[{"text": p}] for p in plan.pieces]
    if plan.tool_calls:
        groups.append(_calls(plan))
    if not groups:
        groups.append([{"text": ""}])
    early = {"promptTokenCount": plan.prompt_tokens, "totalTokenCount": plan.prompt_tokens}
    chunks = []
    for i, parts in enumerate(groups):
        candidate: dict = {"content": {"parts": parts, "role": "model"}, "index": 0}
        last = i == len(groups) - 1
        if last:
            candidate["finishReason"] = FINISH[plan.finish]
        chunks.append(
            {
                "candidates": [candidate],
                "usageMetadata": _usage(plan) if last else early,
                "modelVersion": model,
                "responseId": ident,
            }
        )
    return chunks


def _embeddings(requests: list, batch: bool) -> Reply:
    vectors, tokens = [], 0
    for request in requests:
        content = request.get("content") if isinstance(request, dict) else None
        if not isinstance(content, dict):
            raise BadRequest("* EmbedContentRequest.content: content is not specified")
        text = _parts_text(content.get("parts") or [])[0]
        config = _get(request, "embedContentConfig", "embed_content_config") or {}
        dims = _get(request, "outputDimensionality", "output_dimensionality") or _get(
            config, "outputDimensionality", "output_dimensionality"
        )
        vectors.append({"values": embedding(text, dims or 8)})
        tokens += max(1, words(text))
    reply = json_reply({"embeddings": vectors} if batch else {"embedding": vectors[0]})
    reply.prompt_tokens = tokens
    return reply


def _model(name: str) -> dict:
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name,
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens", "embedContent"],
    }
