"""Anthropic Messages wire format for the fake upstream: messages, count_tokens, models."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from tests.fakes.reply import Incoming, Reply, json_reply, sse_event
from tests.fakes.script import BadRequest, Plan, Prompt, plan_reply, prompt_tokens, signature
from tests.fakes.state import FakeState, Fault

MODELS = ("claude-sonnet-4-5", "fake-model", "fake-tool", "fake-reason", "fake-long", "fake-cached")
STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}
ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
MESSAGES = {
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "The requested resource could not be found.",
    429: "Number of request tokens has exceeded your per-minute rate limit.",
    500: "Internal server error",
    503: "Overloaded",
    529: "Overloaded",
}


def api_key(headers: dict[bytes, bytes], query: bytes) -> str | None:
    """`x-api-key`, or `Authorization: Bearer` as the anthropic SDK 2.x sends API keys."""
    value = headers.get(b"x-api-key")
    if value:
        return value.decode("latin-1")
    bearer = headers.get(b"authorization", b"")
    if bearer[:7].lower() == b"bearer ":
        return bearer[7:].strip().decode("latin-1") or None
    return None


def error(status: int, message: str | None = None, retry_after: float | None = None) -> Reply:
    kind = ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {
        "type": "error",
        "error": {"type": kind, "message": message or MESSAGES.get(status, f"HTTP {status}")},
    }
    reply = json_reply(body, status)
    if retry_after is not None:
        reply.headers.append((b"retry-after", str(max(0, round(retry_after))).encode()))
    return reply


def headers(state: FakeState, inc: Incoming, status: int) -> list[tuple[bytes, bytes]]:
    """`request-id` always; rate-limit headers on success and on 429 (then exhausted)."""
    out = [(b"request-id", inc.request_id.encode())]
    if status != 200 and status != 429:
        return out
    rl = state.ratelimit(inc.key)
    now = time.time()
    remaining_requests = 0 if status == 429 else rl.remaining_requests
    out += [
        (b"anthropic-ratelimit-requests-limit", str(rl.limit_requests).encode()),
        (b"anthropic-ratelimit-requests-remaining", str(remaining_requests).encode()),
        (b"anthropic-ratelimit-requests-reset", _rfc3339(now + rl.reset_requests)),
        (b"anthropic-ratelimit-tokens-limit", str(rl.limit_tokens).encode()),
        (b"anthropic-ratelimit-tokens-remaining", str(rl.remaining_tokens).encode()),
        (b"anthropic-ratelimit-tokens-reset", _rfc3339(now + rl.reset_tokens)),
    ]
    return out


def handle(op: str, inc: Incoming, fault: Fault | None) -> Reply:
    if b"anthropic-version" not in inc.headers:
        raise BadRequest("anthropic-version: header is required")
    if op == "models":
        return json_reply(
            {
                "data": [_model(m) for m in MODELS],
                "has_more": False,
                "first_id": MODELS[0],
                "last_id": MODELS[-1],
            }
        )
    body = inc.json()
    prompt = _prompt(body, need_max_tokens=op == "messages")
    if op == "count_tokens":
        tokens = prompt_tokens(prompt)
        return json_reply({"input_tokens": tokens})
    plan = plan_reply(prompt, fault.size if fault and fault.mode == "huge" else None)
    ident = f"msg_fake{inc.number:06d}"
    if body.get("stream"):
        reply = Reply(content_type=b"text/event-stream", frames=_frames(ident, prompt.model, plan))
    else:
        reply = json_reply(_message(ident, prompt.model, plan))
    reply.prompt_tokens, reply.completion_tokens = plan.prompt_tokens, plan.completion_tokens
    return reply


# -- requests ------------------------------------------------------------------------------
def _blocks(content: object) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise BadRequest("content: Input should be a valid string or list of content blocks")
    return [b for b in content if isinstance(b, dict)]


def _text_and_images(blocks: list[dict]) -> tuple[str, int]:
    texts, images = [], 0
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "image":
            images += 1
        elif kind == "tool_result":
            inner, n = _text_and_images(_blocks(block.get("content") or ""))
            texts.append(inner)
            images += n
    return " ".join(t for t in texts if t), images


def _prompt(body: dict, need_max_tokens: bool) -> Prompt:
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: Field required")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: Field required")
    max_tokens = body.get("max_tokens")
    if need_max_tokens and not isinstance(max_tokens, int):
        raise BadRequest("max_tokens: Field required")
    prompt = Prompt(model=model, max_tokens=max_tokens)
    system = body.get("system")
    if system:
        prompt.texts.append(_text_and_images(_blocks(system))[0])
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise BadRequest("messages: each message needs role 'user' or 'assistant'")
        blocks = _blocks(message.get("content"))
        text, images = _text_and_images(blocks)
        prompt.texts.append(text)
        prompt.images += images
        only_results = bool(blocks) and all(b.get("type") == "tool_result" for b in blocks)
        if message["role"] == "user" and not only_results:
            prompt.last_user_text = _text_and_images([b for b in blocks if b.get("type") == "text"])[0]
    last = messages[-1]
    results = [b for b in _blocks(last.get("content")) if b.get("type") == "tool_result"]
    if last.get("role") == "user" and results:
        prompt.tool_result = _text_and_images(results)[0]
    prompt.tool_names = [t["name"] for t in body.get("tools") or [] if isinstance(t, dict) and t.get("name")]
    return prompt


# -- responses -----------------------------------------------------------------------------
def _usage(plan: Plan, output_tokens: int) -> dict:
    return {
        "input_tokens": plan.prompt_tokens - plan.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": plan.cached_tokens,
        "output_tokens": output_tokens,
    }


def _message(ident: str, model: str, plan: Plan) -> dict:
    content: list[dict] = []
    if plan.reasoning is not None:
        content.append(
            {"type": "thinking", "thinking": plan.reasoning, "signature": signature(plan.reasoning)}
        )
    if plan.text or not plan.tool_calls:
        content.append({"type": "text", "text": plan.text})
    for call in plan.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": f"toolu_fake_{call.index + 1}",
                "name": call.name,
                "input": call.arguments,
            }
        )
    return {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP[plan.finish],
        "stop_sequence": None,
        "usage": _usage(plan, plan.completion_tokens),
    }


def _frames(ident: str, model: str, plan: Plan) -> list[bytes]:
    start = {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(plan, 1),
    }
    frames = [sse_event("message_start", {"type": "message_start", "message": start})]
    index = 0

    def block(opening: dict, deltas: list[dict]) -> None:
        nonlocal index
        frames.append(
            sse_event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
        )
        if index == 0:
            frames.append(sse_event("ping", {"type": "ping"}))
        for delta in deltas:
            frames.append(
                sse_event(
                    "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
                )
            )
        frames.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1

    if plan.reasoning is not None:
        deltas = [{"type": "thinking_delta", "thinking": p} for p in plan.reasoning_pieces]
        deltas.append({"type": "signature_delta", "signature": signature(plan.reasoning)})
        block({"type": "thinking", "thinking": "", "signature": ""}, deltas)
    if plan.text or not plan.tool_calls:
        block({"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in plan.pieces])
    for call in plan.tool_calls:
        opening = {"type": "tool_use", "id": f"toolu_fake_{call.index + 1}", "name": call.name, "input": {}}
        block(opening, [{"type": "input_json_delta", "partial_json": f} for f in call.fragments()])
    frames.append(
        sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": STOP[plan.finish], "stop_sequence": None},
                "usage": {"output_tokens": plan.completion_tokens},
            },
        )
    )
    frames.append(sse_event("message_stop", {"type": "message_stop"}))
    return frames


def _model(name: str) -> dict:
    return {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}


_reset_cache: dict[int, bytes] = {}


def _rfc3339(when: float) -> bytes:
    second = int(when) + 1
    cached = _reset_cache.get(second)
    if cached is None:
        if len(_reset_cache) > 16:
            _reset_cache.clear()
        cached = _reset_cache[second] = (
            datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()
        )
    return cached
