"""The `local` upstream kind: models served inside this process (see proxy.local_models).

Instead of an HTTP request, the pipeline calls `complete` / `stream`; generation runs in a worker thread
and its text arrives as canonical events, so every client protocol streams a local model token by token.
Usage is exact: prompt and output tokens are counted by the model's own tokenizer.
"""

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from proxy.adapters import register_upstream
from proxy.adapters.base import UpstreamAdapter
from proxy.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    Part,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from proxy.local_models import runtime_for
from proxy.local_models.generation import Generation


def _usage(generation: Generation) -> Usage:
    return Usage(input_tokens=generation.prepared.prompt_tokens, output_tokens=generation.result.output_tokens)


def _finish(generation: Generation) -> str:
    reason = generation.result.finish_reason
    return reason if reason in ("stop", "length", "tool_calls") else "stop"


class LocalUpstream(UpstreamAdapter):
    kind = "local"
    in_process = True

    async def complete(self, request: CanonicalRequest, *, upstream_model: str, provider: Any) -> CanonicalResponse:
        async with runtime_for(provider).generation(request) as generation:
            texts = [piece async for batch in generation.pieces() for piece in batch]
        parts: list[Part] = [TextPart("".join(texts))] if texts else []
        parts.extend(generation.result.tool_calls)
        return CanonicalResponse(
            id=f"local-{uuid.uuid4().hex}", model=request.model, parts=parts, finish_reason=_finish(generation),
            usage=_usage(generation), created=int(time.time()),
        )

    async def stream(
        self, request: CanonicalRequest, *, upstream_model: str, provider: Any
    ) -> AsyncIterator[list[StreamEvent]]:
        # Loading, validation and queueing happen before the first event, so their errors are plain
        # HTTP errors in the client's protocol rather than a broken stream.
        async with runtime_for(provider).generation(request) as generation:
            # The prompt is already counted: protocols that report input tokens up front (Anthropic) get them.
            yield [StreamStart(id=f"local-{uuid.uuid4().hex}", model=request.model, created=int(time.time()),
                               usage=Usage(input_tokens=generation.prepared.prompt_tokens))]
            async for batch in generation.pieces():
                yield [TextDelta("".join(batch))]
        events: list[StreamEvent] = []
        for index, call in enumerate(generation.result.tool_calls):
            events += [ToolCallStart(index, call.id, call.name), ToolCallDelta(index, call.arguments)]
        yield events + [StreamEnd(_finish(generation), _usage(generation))]


register_upstream(LocalUpstream())
