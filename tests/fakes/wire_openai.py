"""OpenAI wire format for the fake upstream: chat completions, models, embeddings."""

from __future__ import annotations

import time

from tests.fakes.reply import Incoming, Reply, json_reply, sse_data
from tests.fakes.script import BadRequest, Plan, Prompt, embedding, embedding_base64, plan_reply, words
from tests.fakes.state import FakeState, Fault

MODELS = (
    "gpt-4o-mini",
    "fake-model",
    "fake-tool",
    "fake-parallel",
    "fake-reason",
    "fake-long",
    "fake-cached",
    "text-embedding-3-small",
)
FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}
ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "service_unavailable"),
}
MESSAGES = {
    400: "Invalid request.",
    401: "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
    403: "Country, region, or territory not supported",
    404: "The model does not exist or you do not have access to it.",
    429: "Rate limit reached for requests. Please try again later.",
    500: "The server had an error while processing your request. Sorry about that!",
    503: "The engine is currently overloaded, please try again later.",
}


def api_key(headers: dict[bytes, bytes], query: bytes) -> str | None:
    value = headers.get(b"authorization", b"")
    if value[:7].lower() != b"bearer ":
        return None
    return value[7:].strip().decode("latin-1") or None


def error(status: int, message: str | None = None, retry_after: float | None = None) -> Reply:
    kind, code = ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    body = {
        "error": {
            "message": message or MESSAGES.get(status, f"HTTP {status}"),
            "type": kind,
            "param": None,
            "code": code,
        }
    }
    reply = json_reply(body, status)
    if retry_after is not None:
        reply.headers.append((b"retry-after", _num(retry_after)))
        reply.headers.append((b"retry-after-ms", str(int(retry_after * 1000)).encode()))
    return reply


def headers(state: FakeState, inc: Incoming, status: int) -> list[tuple[bytes, bytes]]:
    """Rate-limit headers on success and on 429 (then with no requests remaining)."""
    if status != 200 and status != 429:
        return [(b"x-request-id", inc.request_id.encode())]
    rl = state.ratelimit(inc.key)
    exhausted = status == 429
    return [
        (b"x-request-id", inc.request_id.encode()),
        (b"openai-processing-ms", b"1"),
        (b"x-ratelimit-limit-requests", str(rl.limit_requests).encode()),
        (b"x-ratelimit-remaining-requests", b"0" if exhausted else str(rl.remaining_requests).encode()),
        (b"x-ratelimit-limit-tokens", str(rl.limit_tokens).encode()),
        (b"x-ratelimit-remaining-tokens", str(rl.remaining_tokens).encode()),
        (b"x-ratelimit-reset-requests", _duration(rl.reset_requests)),
        (b"x-ratelimit-reset-tokens", _duration(rl.reset_tokens)),
    ]


def handle(op: str, inc: Incoming, fault: Fault | None) -> Reply:
    if op == "models":
        return json_reply({"object": "list", "data": [_model(m) for m in MODELS]})
    body = inc.json()
    if op == "embeddings":
        return _embeddings(body)
    prompt, stream, include_usage = _prompt(body)
    plan = plan_reply(prompt, fault.size if fault and fault.mode == "huge" else None)
    ident = f"chatcmpl-fake{inc.number}"
    if stream:
        reply = Reply(
            content_type=b"text/event-stream", frames=_frames(ident, prompt.model, plan, include_usage)
        )
    else:
        reply = json_reply(_completion(ident, prompt.model, plan))
    reply.prompt_tokens, reply.completion_tokens = plan.prompt_tokens, plan.completion_tokens
    return reply


# -- requests ------------------------------------------------------------------------------
def _content(content: object) -> tuple[str, int]:
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise BadRequest("message content must be a string or an array of content parts")
    texts, images = [], 0
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "input_text"):
            texts.append(part.get("text") or "")
        elif kind == "image_url":
            images += 1
    return " ".join(texts), images


def _prompt(body: dict) -> tuple[Prompt, bool, bool]:
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array")
    prompt = Prompt(model=model)
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequest("each message must be an object")
        text, images = _content(message.get("content"))
        prompt.texts.append(text)
        prompt.images += images
        if message.get("role") == "user":
            prompt.last_user_text = text
    trailing = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        trailing.insert(0, _content(message.get("content"))[0])
    if trailing:
        prompt.tool_result = " ".join(trailing)
    for tool in body.get("tools") or []:
        kind = tool.get("type")
        name = (tool.get(kind) or {}).get("name") if kind in ("function", "custom") else None
        if name:
            prompt.tool_names.append(name)
    prompt.tool_names += [f["name"] for f in body.get("functions") or [] if "name" in f]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    prompt.max_tokens = limit if isinstance(limit, int) else None
    options = body.get("stream_options") or {}
    return prompt, bool(body.get("stream")), bool(options.get("include_usage"))


# -- responses -----------------------------------------------------------------------------
def _usage(plan: Plan) -> dict:
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.total_tokens,
        "prompt_tokens_details": {"cached_tokens": plan.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": plan.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _completion(ident: str, model: str, plan: Plan) -> dict:
    message: dict = {"role": "assistant", "content": plan.text or None, "refusal": None}
    if plan.reasoning is not None:
        message["reasoning_content"] = plan.reasoning
    if plan.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_fake_{c.index + 1}",
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments_json},
            }
            for c in plan.tool_calls
        ]
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": FINISH[plan.finish]}],
        "usage": _usage(plan),
        "system_fingerprint": "fp_fake",
    }


def _frames(ident: str, model: str, plan: Plan, include_usage: bool) -> list[bytes]:
    created = int(time.time())

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        data = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            data["usage"] = None
        return sse_data(data)

    frames = [chunk({"role": "assistant", "content": "", "refusal": None})]
    frames += [chunk({"reasoning_content": p}) for p in plan.reasoning_pieces]
    frames += [chunk({"content": p}) for p in plan.pieces]
    for call in plan.tool_calls:
        head = {"index": call.index, "id": f"call_fake_{call.index + 1}", "type": "function"}
        frames.append(chunk({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]}))
        frames += [
            chunk({"tool_calls": [{"index": call.index, "function": {"arguments": f}}]})
            for f in call.fragments()
        ]
    frames.append(chunk({}, FINISH[plan.finish]))
    if include_usage:
        frames.append(
            sse_data(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": _usage(plan),
                }
            )
        )
    frames.append(b"data: [DONE]\n\n")
    return frames


def _embeddings(body: dict) -> Reply:
    raw, model = body.get("input"), body.get("model")
    if not isinstance(model, str) or raw is None or raw == [] or raw == "":
        raise BadRequest("'model' and a non-empty 'input' are required")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
        raw = [raw]
    inputs = [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw]
    dims = body.get("dimensions") or 8
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(inputs):
        vector = embedding(text, dims)
        data.append(
            {
                "object": "embedding",
                "index": i,
                "embedding": embedding_base64(vector) if as_base64 else vector,
            }
        )
    tokens = sum(max(1, words(t)) for t in inputs)
    reply = json_reply(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
    reply.prompt_tokens = tokens
    return reply


def _model(name: str) -> dict:
    return {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "fake-upstream"}


def _duration(seconds: float) -> bytes:
    if seconds < 1:
        return f"{int(seconds * 1000)}ms".encode()
    minutes, rest = divmod(seconds, 60)
    return (f"{int(minutes)}m{rest:g}s" if minutes else f"{rest:g}s").encode()


def _num(seconds: float) -> bytes:
    return (str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}").encode()
