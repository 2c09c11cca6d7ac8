"""The two adapter interfaces: a client protocol (inbound wire format) and an upstream kind (outbound).

Every wire format module in this package implements one or both and registers them; the pipeline only
talks to these interfaces and the canonical model, so N inbound + M outbound adapters give N×M paths.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from proxy.canonical import CanonicalRequest, CanonicalResponse, GatewayError, StreamEvent


@dataclass(slots=True)
class InboundCall:
    """What the URL (not the body) says about a request."""

    path_model: str | None = None  # the model named in the path (Gemini)
    stream: bool | None = None  # decided by the path (Gemini :streamGenerateContent), else the body decides
    sse: bool = True  # Gemini: alt=sse framing vs a streamed JSON array
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # the client's FORWARDED_HEADERS, lower-case names


# Client headers a protocol may pass on to an upstream of its own kind (Anthropic betas: Claude Code and the
# SDK's beta helpers depend on them). Only these are read, so nothing else a client sends can reach a provider.
FORWARDED_HEADERS = (b"anthropic-beta",)


@dataclass(slots=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes


class StreamEncoder:
    """Turns canonical stream events into the client's framing. One instance per response."""

    content_type = b"text/event-stream"

    def encode(self, event: StreamEvent) -> bytes:
        raise NotImplementedError

    def error(self, err: GatewayError) -> bytes:
        """Bytes that end a stream which failed after its first byte was sent."""
        raise NotImplementedError


class ClientProtocol:
    name: str = ""

    def parse_request(self, body: Any, call: InboundCall) -> CanonicalRequest:
        """Validate and convert a client body; raise GatewayError("invalid_request", ..., param=...)."""
        raise NotImplementedError

    def render_response(self, response: CanonicalResponse, request: CanonicalRequest) -> Any:
        raise NotImplementedError

    def stream_encoder(self, request: CanonicalRequest, call: InboundCall) -> StreamEncoder:
        raise NotImplementedError

    def render_error(self, err: GatewayError) -> Any:
        raise NotImplementedError


class StreamDecoder:
    """Turns upstream stream bytes into canonical events. One instance per upstream response."""

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        raise NotImplementedError

    def close(self) -> list[StreamEvent]:
        """Called at end of input; must end with exactly one StreamEnd if the stream was complete,
        or raise GatewayError("upstream", ...) if it was cut short."""
        raise NotImplementedError


class UpstreamAdapter:
    kind: str = ""
    # True for providers served inside this process (local models): the pipeline calls `complete` /
    # `stream` instead of sending an HTTP request.
    in_process: bool = False

    def build_request(
        self, request: CanonicalRequest, *, upstream_model: str, base_url: str, secret: str, extra_headers: dict
    ) -> UpstreamRequest:
        raise NotImplementedError

    def parse_response(self, body: bytes, request: CanonicalRequest) -> CanonicalResponse:
        raise NotImplementedError

    def stream_decoder(self, request: CanonicalRequest) -> StreamDecoder:
        raise NotImplementedError

    def parse_error(self, status: int, headers: dict[str, str], body: bytes) -> GatewayError:
        raise NotImplementedError

    # --- in-process providers only ---

    async def complete(self, request: CanonicalRequest, *, upstream_model: str, provider: Any) -> CanonicalResponse:
        raise NotImplementedError

    def stream(self, request: CanonicalRequest, *, upstream_model: str, provider: Any) -> AsyncIterator[list[StreamEvent]]:
        """Yield batches of canonical events; closing the iterator early must stop the generation."""
        raise NotImplementedError
