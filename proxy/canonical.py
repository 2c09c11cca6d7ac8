"""The one canonical request / response / stream-event model every wire-format adapter converts to and from.

Conventions:
- Roles are only "user" and "assistant"; the system prompt is `CanonicalRequest.system`.
- Tool results are `ToolResult` parts inside a "user" message (Anthropic's shape); adapters for formats
  with a separate tool role (OpenAI) split them out.
- Tool-call arguments are kept as JSON text exactly as the model produced them.
- A stream is: `StreamStart`, then any mix of `TextDelta` / `ReasoningDelta` / `ToolCallStart` /
  `ToolCallDelta`, then exactly one `StreamEnd` carrying the finish reason and the final usage.
- A refusal (OpenAI's `refusal` field: the model declined, e.g. under a JSON schema) is text flagged
  `refusal=True` (`TextPart` / `TextDelta`) and the finish reason "refusal": adapters without a refusal field
  show it as plain text, which is what an unaware reader of the flag gets too.
- Finish "error" means the provider ended the answer abnormally (e.g. Gemini MALFORMED_FUNCTION_CALL);
  each client protocol maps "error" and "refusal" onto one of its own valid values.
"""

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "refusal", "error"]


@dataclass(slots=True)
class TextPart:
    text: str
    refusal: bool = False  # the model's refusal message rather than an answer


@dataclass(slots=True)
class ImagePart:
    url: str | None = None  # http(s) URL, when the client sent one
    data: str | None = None  # base64 without the data: prefix
    media_type: str | None = None  # e.g. "image/png"
    detail: str | None = None  # OpenAI's low/high/auto hint

    @classmethod
    def from_url(cls, url: str, detail: str | None = None) -> "ImagePart":
        """From an http(s) URL or a `data:<media type>;base64,<data>` URL."""
        if url.startswith("data:"):
            header, _, data = url[5:].partition(",")
            media_type = header.split(";", 1)[0] or None
            return cls(data=data, media_type=media_type, detail=detail)
        return cls(url=url, detail=detail)

    def as_url(self) -> str:
        if self.data is not None:
            return f"data:{self.media_type or 'application/octet-stream'};base64,{self.data}"
        return self.url or ""


@dataclass(slots=True)
class ReasoningPart:
    text: str
    signature: str | None = None  # Anthropic thinking signature / Gemini thought signature
    redacted: str | None = None  # Anthropic redacted_thinking data


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass(slots=True)
class ToolResult:
    tool_call_id: str
    content: list["TextPart | ImagePart"]
    name: str | None = None  # Gemini's functionResponse needs the function name
    is_error: bool = False


Part = TextPart | ImagePart | ReasoningPart | ToolCall | ToolResult


@dataclass(slots=True)
class Message:
    role: Literal["user", "assistant"]
    parts: list[Part]


@dataclass(slots=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(slots=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None  # with mode "tool"


@dataclass(slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None


@dataclass(slots=True)
class ReasoningConfig:
    effort: str | None = None  # "minimal" | "low" | "medium" | "high"
    budget_tokens: int | None = None
    include_thoughts: bool = True


@dataclass(slots=True)
class CanonicalRequest:
    model: str
    messages: list[Message]
    system: str | None = None
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning: ReasoningConfig | None = None
    include_usage: bool = True  # OpenAI stream_options.include_usage; other formats always report usage
    user: str | None = None
    # Protocol-specific extras an adapter keeps for the same protocol on the way out (e.g. "seed").
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0  # all prompt tokens, cached ones included
    output_tokens: int = 0  # all generated tokens, reasoning ones included
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_creation_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class CanonicalResponse:
    id: str
    model: str
    parts: list[Part]  # assistant output: ReasoningPart, TextPart, ToolCall
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    created: int = 0


# --- stream events ---------------------------------------------------------------------------------


@dataclass(slots=True)
class StreamStart:
    id: str
    model: str
    created: int = 0
    usage: Usage | None = None  # what the provider reported up front (prompt tokens), when it does


@dataclass(slots=True)
class TextDelta:
    text: str
    refusal: bool = False


@dataclass(slots=True)
class ReasoningDelta:
    text: str = ""
    signature: str | None = None


@dataclass(slots=True)
class ToolCallStart:
    index: int  # 0-based position among this response's tool calls
    id: str
    name: str


@dataclass(slots=True)
class ToolCallDelta:
    index: int
    arguments: str  # a fragment of the JSON text


@dataclass(slots=True)
class StreamEnd:
    finish_reason: FinishReason
    usage: Usage


StreamEvent = StreamStart | TextDelta | ReasoningDelta | ToolCallStart | ToolCallDelta | StreamEnd


# --- errors ----------------------------------------------------------------------------------------

ErrorKind = Literal[
    "invalid_request",  # 400
    "authentication",  # 401
    "permission",  # 403
    "not_found",  # 404
    "too_large",  # 413
    "rate_limit",  # 429
    "budget_exceeded",  # 429
    "timeout",  # 504
    "overloaded",  # 503 / 529
    "upstream",  # 502: the provider failed or answered garbage
    "internal",  # 500
]


class GatewayError(Exception):
    """An error to show the client in its own protocol's shape."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status or DEFAULT_STATUS[kind]
        self.param = param
        self.retry_after = retry_after
        self.code = code


DEFAULT_STATUS: dict[str, int] = {
    "invalid_request": 400,
    "authentication": 401,
    "permission": 403,
    "not_found": 404,
    "too_large": 413,
    "rate_limit": 429,
    "budget_exceeded": 429,
    "timeout": 504,
    "overloaded": 503,
    "upstream": 502,
    "internal": 500,
}


def kind_for_status(status: int) -> ErrorKind:
    """The canonical error kind of an upstream HTTP status."""
    return {
        400: "invalid_request",
        401: "authentication",
        403: "permission",
        404: "not_found",
        408: "timeout",
        413: "too_large",
        422: "invalid_request",
        429: "rate_limit",
        503: "overloaded",
        504: "timeout",
        529: "overloaded",
    }.get(status, "upstream" if status >= 500 else "invalid_request")
