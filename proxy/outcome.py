"""What the usage row will say about a request, gathered while it runs.

Usage comes from the provider when it reports it (the final stream chunk included). When it does not (a
stream cut short or aborted by the client, a provider that never counts), tokens are estimated from the
prompt and the output seen so far, and the row is flagged `estimated`. A request the provider never
accepted (refused before any output) uses no tokens.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from proxy import estimate
from proxy.canonical import CanonicalRequest, CanonicalResponse, ReasoningPart, TextPart, ToolCall, Usage

if TYPE_CHECKING:
    from proxy.stored_bodies import BodyCapture


def _has_tokens(usage: Usage | None) -> bool:
    return usage is not None and (usage.input_tokens > 0 or usage.output_tokens > 0)


@dataclass(slots=True)
class Outcome:
    status: int = 200
    usage: Usage = field(default_factory=Usage)
    error_type: str = ""
    ttfb_ms: int | None = None
    attempts: int = 0
    credential_id: int | None = None
    provider_id: int | None = None
    upstream_kind: str = ""
    upstream_model: str = ""
    route_id: int | None = None  # the route that served (a fallback's, when one did)
    upstream_started: bool = False  # the provider accepted the request and began answering
    usage_reported: bool = False
    stream_failed: bool = False
    output: list[str] = field(default_factory=list)  # text seen, for estimates
    bodies: "BodyCapture | None" = None  # set only when the route stores bodies (proxy/stored_bodies.py)

    def begin_attempt(self) -> None:
        """A new upstream attempt: forget what a failed earlier one left behind."""
        self.attempts += 1
        self.usage = Usage()
        self.upstream_started = self.usage_reported = self.stream_failed = False
        self.output.clear()
        if self.bodies is not None:
            self.bodies.reset_response()

    def note_start(self, usage: Usage | None) -> None:
        self.upstream_started = True
        if _has_tokens(usage):
            self.usage = usage  # prompt tokens announced up front (e.g. Anthropic's message_start)

    def note_end(self, usage: Usage) -> None:
        self.upstream_started = True
        if _has_tokens(usage):
            self.usage, self.usage_reported = usage, True

    def note_response(self, result: CanonicalResponse) -> None:
        self.upstream_started = True
        if _has_tokens(result.usage):
            self.usage, self.usage_reported = result.usage, True
            return
        for part in result.parts:
            if isinstance(part, TextPart | ReasoningPart):
                self.output.append(part.text)
            elif isinstance(part, ToolCall):
                self.output.append(part.name + part.arguments)

    def final_usage(self, request: CanonicalRequest | None) -> Usage:
        if self.usage_reported:
            return self.usage
        if not self.upstream_started or request is None:
            return Usage()
        prompt = self.usage.input_tokens or estimate.prompt_tokens(request)
        return Usage(input_tokens=prompt, output_tokens=estimate.count_tokens("".join(self.output)),
                     cached_tokens=self.usage.cached_tokens, estimated=True)

    def tokens_to_charge(self, prompt_estimate: int) -> int:
        """Tokens to charge against tokens-per-minute limits when the attempt ends (cheap: no tokenizer)."""
        if self.usage_reported:
            return self.usage.total_tokens
        if not self.upstream_started:
            return 0
        prompt = self.usage.input_tokens or prompt_estimate
        return prompt + estimate.heuristic_tokens(sum(len(text) for text in self.output))
