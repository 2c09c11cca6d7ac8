"""Golden OpenAI Chat Completions streams (tests/fixtures/streams/openai_*.sse) fed to the `openai` upstream
decoder in every possible chunking.

The fixtures follow the API reference's `chat.completion.chunk` (openai-python
`types/chat/chat_completion_chunk.py`) and what OpenAI-compatible hosts really send:
- `openai_text.sse`: OpenAI with `stream_options.include_usage` (`"usage": null` on every chunk, an
  `obfuscation` field, an empty `content: ""` delta, the usage in a last chunk with empty `choices`).
- `openai_tool.sse`: OpenAI parallel tool calls, one after the other; `id`, `type` and `name` only in a
  call's first fragment, multi-byte characters split across argument fragments.
- `openai_tool_interleaved.sse`: an OpenAI-compatible host (vLLM-style) with CRLF line endings, `data:`
  without a space, keep-alive comments, fragments of two calls interleaved, `name: null` in later
  fragments, a whole call in one fragment, an empty argument fragment, `prompt_tokens_details: null`.
- `openai_deepseek_reasoning.sse`: DeepSeek's `reasoning_content` (with `content: null`), `: keep-alive`
  comments, usage on the finish chunk with `prompt_cache_hit_tokens`.
- `openai_openrouter_reasoning.sse`: OpenRouter's `reasoning` / `reasoning_details`, `: OPENROUTER
  PROCESSING` comments, `native_finish_reason`, `cost` in usage.
- `openai_azure.sse`: Azure OpenAI, whose first chunk is a content-filter preamble with an empty `id`,
  `model`, `object` and `choices` (`prompt_filter_results`); `content_filter_results` on every choice and,
  from the asynchronous filter, an annotation chunk (empty id again) whose choice has no `delta`. The stream
  takes its id from the first chunk that has one.
- `openai_refusal.sse`: a structured-output refusal: the text arrives in `delta.refusal` (`content` null)
  and ends with `finish_reason: "stop"`; canonically refusal text and the finish reason "refusal".
- `openai_n2.sse`: OpenAI with `n: 2`, the two choices' chunks interleaved; the gateway answers with the
  first choice only (as its plain responses do), never a mix of both.
- `openai_error.sse` / `openai_openrouter_error.sse`: an `error` object mid-stream (OpenAI's bare
  `{"error": ...}` event; OpenRouter's chunk with `error` and `finish_reason: "error"`).

Every fixture holds multi-byte UTF-8 ("héllo 世界 🎉"), so chunk boundaries fall inside characters and, in
the tool fixtures, inside tool-argument JSON. The official SDK's own accumulator reads each fixture too,
so a fixture that drifts from what the SDK understands fails here, not in production.
"""

from pathlib import Path

import orjson
import pytest
from openai._models import construct_type
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from proxy.adapters.openai_chat import openai_finish
from proxy.adapters.openai_upstream import OpenAIChatDecoder
from proxy.canonical import (
    GatewayError,
    ReasoningDelta,
    StreamEnd,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from tests.test_stream_fixtures_vendors import chunkings  # whole, byte by byte, every two-piece split

FIXTURES = Path(__file__).parent / "fixtures" / "streams"
ZURICH = {"location": "Zürich 🏔", "unit": "celsius"}
TOKYO = {"city": "東京"}

EXPECTED = {
    "openai_text.sse": [
        StreamStart("chatcmpl-C3VkR2W9Jx0bQK6mYb3a8Yf3Lq1Zt", "gpt-4o-2024-08-06", 1754900000),
        TextDelta("h"), TextDelta("éllo"), TextDelta(" 世界"), TextDelta(" 🎉"),
        StreamEnd("stop", Usage(19, 6)),
    ],
    "openai_tool.sse": [
        StreamStart("chatcmpl-C3Vq8tY2kGm1pQx0rL5sN7dHj4Ub", "gpt-4.1-2025-04-14", 1754900321),
        ToolCallStart(0, "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather"),
        ToolCallDelta(0, '{"lo'), ToolCallDelta(0, 'cation":'), ToolCallDelta(0, ' "Zür'),
        ToolCallDelta(0, 'ich 🏔", "unit": "cel'), ToolCallDelta(0, 'sius"}'),
        ToolCallStart(1, "call_7hYq0zLk3PbW2nXr9sTe1MvA", "get_time"),
        ToolCallDelta(1, '{"city": "東'), ToolCallDelta(1, '京"}'),
        StreamEnd("tool_calls", Usage(412, 48, cached_tokens=256)),
    ],
    "openai_tool_interleaved.sse": [
        StreamStart("chatcmpl-9b1f0c2e7d4a4f3c", "qwen3-32b", 1754901000),
        TextDelta("Checking both ✓"),
        ToolCallStart(0, "chatcmpl-tool-5e0c1a9f", "get_weather"), ToolCallDelta(0, '{"location": "Zü'),
        ToolCallStart(1, "chatcmpl-tool-77d2b0c4", "get_time"), ToolCallDelta(1, '{"city": "東京"}'),
        ToolCallDelta(0, 'rich 🏔", "unit": "celsius"}'),
        StreamEnd("tool_calls", Usage(388, 43)),
    ],
    "openai_deepseek_reasoning.sse": [
        StreamStart("6f1c2a4e-8b3d-4e5f-9a0b-1c2d3e4f5a6b", "deepseek-reasoner", 1754902000),
        ReasoningDelta("Grüße → "), ReasoningDelta("世界"), TextDelta("héllo"), TextDelta(" 世界 🎉"),
        StreamEnd("stop", Usage(96, 57, cached_tokens=64, reasoning_tokens=41)),
    ],
    "openai_openrouter_reasoning.sse": [
        StreamStart("gen-1754903000-Xq3LkP9sVb2NcR7mT0aZ", "google/gemini-2.5-flash", 1754903000),
        ReasoningDelta("**Greeting** the wörld"), ReasoningDelta(" in 日本語"), TextDelta("héllo 世界 🎉"),
        StreamEnd("stop", Usage(11, 83, reasoning_tokens=77)),
    ],
    "openai_n2.sse": [
        StreamStart("chatcmpl-C3Wn2Qa8Rt5Yu1Io3Pk7Lj9Hg", "gpt-4o-mini-2024-07-18", 1754906000),
        TextDelta("héllo"), TextDelta(" 世界 🎉"),
        StreamEnd("stop", Usage(12, 9)),
    ],
    "openai_azure.sse": [
        StreamStart("chatcmpl-C3XaZ8kQ2mVt5Rb1Ny7Lp0Hd", "gpt-4o-2024-11-20", 1754907000),
        TextDelta("h"), TextDelta("éllo"), TextDelta(" 世界"), TextDelta(" 🎉"),
        StreamEnd("stop", Usage(21, 6)),
    ],
    "openai_refusal.sse": [
        StreamStart("chatcmpl-C3YrF4nW8pXc2Vz6Qk0Tm1Js", "gpt-4o-2024-08-06", 1754908000),
        TextDelta("I’m sorry,", refusal=True), TextDelta(" I can’t help with that ✋", refusal=True),
        StreamEnd("refusal", Usage(58, 11)),
    ],
}
# What the client sees once the events are put together: text, reasoning, whole tool calls, the end.
MERGED = {
    "openai_text.sse": ("héllo 世界 🎉", "", [], "stop"),
    "openai_tool.sse": ("", "", [("call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", ZURICH),
                                 ("call_7hYq0zLk3PbW2nXr9sTe1MvA", "get_time", TOKYO)], "tool_calls"),
    "openai_tool_interleaved.sse": ("Checking both ✓", "", [("chatcmpl-tool-5e0c1a9f", "get_weather", ZURICH),
                                                            ("chatcmpl-tool-77d2b0c4", "get_time", TOKYO)],
                                    "tool_calls"),
    "openai_deepseek_reasoning.sse": ("héllo 世界 🎉", "Grüße → 世界", [], "stop"),
    "openai_openrouter_reasoning.sse": ("héllo 世界 🎉", "**Greeting** the wörld in 日本語", [], "stop"),
    "openai_n2.sse": ("héllo 世界 🎉", "", [], "stop"),
    "openai_azure.sse": ("héllo 世界 🎉", "", [], "stop"),
    "openai_refusal.sse": ("", "", [], "stop"),  # the refusal text is compared on its own below
}
REFUSAL = "I’m sorry, I can’t help with that ✋"
ERRORS = {
    "openai_error.sse": (
        [StreamStart("chatcmpl-BwoiPq7Lr3Xk0Zs2Vn8Dy4Tg", "gpt-4.1-2025-04-14", 1754904000), TextDelta("Partiäl")],
        "The server had an error while processing your request. Sorry about that!"),
    "openai_openrouter_error.sse": (
        [StreamStart("gen-1754905000-Lm4QpR8sTv1WxY3zA6bC", "anthropic/claude-sonnet-4.5", 1754905000),
         TextDelta("Partiäl")],
        "Provider disconnected unexpectedly"),
}


def decode(pieces: list[bytes]) -> list:
    decoder = OpenAIChatDecoder()
    events = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.close()


def merged(events: list) -> tuple[str, str, list, str]:
    """The events put together per kind, as an OpenAI Chat client sees them (refusal text is not content, a
    refusal finishes with "stop"); also checks the stream's shape: one start first, one end last."""
    assert isinstance(events[0], StreamStart) and isinstance(events[-1], StreamEnd)
    assert sum(isinstance(e, StreamStart | StreamEnd) for e in events) == 2
    text = "".join(e.text for e in events if isinstance(e, TextDelta) and not e.refusal)
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    calls = {e.index: [e.id, e.name, ""] for e in events if isinstance(e, ToolCallStart)}
    for event in events:
        if isinstance(event, ToolCallDelta):
            calls[event.index][2] += event.arguments
    tools = [(i, n, orjson.loads(a)) for i, n, a in (calls[index] for index in sorted(calls))]
    return text, reasoning, tools, openai_finish(events[-1].finish_reason)


def sdk_completion(data: bytes, *, strict: bool = True):
    """The same stream as the official openai SDK's accumulator reads it, each chunk validated against the SDK's
    types; or, with `strict=False`, built leniently as the SDK's stream reader builds them (Azure's chunks do
    not fit the types: an empty `object`). The SDK's accumulator fails on Azure's annotation chunks, whose
    choice has no `delta` (openai/openai-python#1677), so they are left out here; the gateway's clients never
    see them, since it re-encodes the stream."""
    state = ChatCompletionStreamState()
    for line in data.decode().splitlines():
        payload = line.removeprefix("data:").lstrip(" ")
        if not line.startswith("data:") or payload == "[DONE]":
            continue
        chunk = orjson.loads(payload)
        if not strict and any("delta" not in choice for choice in chunk["choices"]):
            continue
        if strict:
            state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
        else:
            state.handle_chunk(construct_type(type_=ChatCompletionChunk, value=chunk))
    return state.get_final_completion()


def sdk_view(data: bytes, *, strict: bool = True) -> tuple[str, str, list, str, int]:
    completion = sdk_completion(data, strict=strict)
    message, extra = completion.choices[0].message, completion.choices[0].message.model_extra or {}
    tools = [(c.id, c.function.name, orjson.loads(c.function.arguments)) for c in message.tool_calls or []]
    reasoning = extra.get("reasoning_content") or extra.get("reasoning") or ""
    return (message.content or "", reasoning, tools, completion.choices[0].finish_reason,
            completion.usage.completion_tokens)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_stream_decodes_the_same_in_every_chunking(name):
    data = (FIXTURES / name).read_bytes()
    assert data.decode() != data.decode("latin-1")  # multi-byte characters to split
    for pieces in chunkings(data):
        assert decode(pieces) == EXPECTED[name], [len(p) for p in pieces]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_merged_events_match_what_the_openai_sdk_accumulates(name):
    data = (FIXTURES / name).read_bytes()
    events = decode([data])
    assert merged(events) == MERGED[name]
    # the official SDK reads the fixture the same way (it knows nothing of the gateway); its accumulator
    # refuses a stream where any choice stopped at the length limit, as the second one in openai_n2.sse does
    if name != "openai_n2.sse":
        assert sdk_view(data, strict=name != "openai_azure.sse") == (*MERGED[name], events[-1].usage.output_tokens)


def test_refusal_reads_as_the_sdk_reads_it():
    events = decode([(FIXTURES / "openai_refusal.sse").read_bytes()])
    assert "".join(e.text for e in events if isinstance(e, TextDelta) and e.refusal) == REFUSAL
    assert sdk_completion((FIXTURES / "openai_refusal.sse").read_bytes()).choices[0].message.refusal == REFUSAL


def test_azure_preamble_does_not_start_the_stream():
    """Azure's first chunk has an empty id: the stream (and the id its clients see) starts with the first chunk
    that names one; a host that never names one gets a made-up id, never an empty one."""
    azure = (FIXTURES / "openai_azure.sse").read_bytes()
    assert azure.startswith(b'data: {"choices":[],"created":0,"id":"","model":"","object":""')
    assert b'"content_filter_offsets"' in azure
    anonymous = azure.replace(b'"id":"chatcmpl-C3XaZ8kQ2mVt5Rb1Ny7Lp0Hd"', b'"id":""')
    start = decode([anonymous])[0]
    assert start.id.startswith("chatcmpl-") and len(start.id) > len("chatcmpl-")
    assert start.model == "gpt-4o-2024-11-20"


def test_framing_variants_are_in_the_fixtures():
    """The fixtures really carry what they claim to exercise (a fixture rewritten in a tidier shape would
    silently stop testing it)."""
    interleaved = (FIXTURES / "openai_tool_interleaved.sse").read_bytes()
    assert b"\r\n" in interleaved and b"\ndata:{" in interleaved and b"\n: ping" in interleaved
    assert b"\n\n" not in interleaved.replace(b"\r\n", b"")
    assert b": OPENROUTER PROCESSING" in (FIXTURES / "openai_openrouter_reasoning.sse").read_bytes()
    assert b": keep-alive" in (FIXTURES / "openai_deepseek_reasoning.sse").read_bytes()
    text = (FIXTURES / "openai_text.sse").read_bytes()
    assert b'"delta":{"content":""}' in text and b'"choices":[],"usage":{' in text


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_error_object_mid_stream_keeps_what_came_before(name):
    data = (FIXTURES / name).read_bytes()
    expected, message = ERRORS[name]
    for pieces in chunkings(data):
        decoder, events = OpenAIChatDecoder(), []
        with pytest.raises(GatewayError) as info:
            for piece in pieces:
                events += decoder.feed(piece)
            decoder.close()
        # what came before the error in the same network chunk still reaches the client
        assert events == expected, [len(p) for p in pieces]
        assert (info.value.kind, info.value.message) == ("upstream", message)


def test_stream_cut_before_its_finish_is_an_error():
    data = (FIXTURES / "openai_text.sse").read_bytes()
    finish = data.index(b'data: {"id":"chatcmpl-C3VkR2W9Jx0bQK6mYb3a8Yf3Lq1Zt","object":"chat.completion.chunk",'
                        b'"created":1754900000,"model":"gpt-4o-2024-08-06","service_tier":"default",'
                        b'"system_fingerprint":"fp_07871e2ad8","choices":[{"index":0,"delta":{},')
    # a cut anywhere before the finish chunk is complete, even inside a character or an unfinished event
    for cut in range(finish + 1):
        decoder = OpenAIChatDecoder()
        decoder.feed(data[:cut])
        with pytest.raises(GatewayError) as info:
            decoder.close()
        assert info.value.kind == "upstream", cut


def test_stream_cut_after_its_finish_still_ends():
    """Some OpenAI-compatible hosts never send `[DONE]`: once the finish reason has arrived, the answer is
    whole, so a missing `[DONE]` (or usage chunk) ends the stream normally instead of failing it."""
    data = (FIXTURES / "openai_text.sse").read_bytes()
    assert decode([data[: data.index(b"data: [DONE]")]]) == EXPECTED["openai_text.sse"]
    without_usage = decode([data[: data.index(b'data: {"id":"chatcmpl-C3VkR2W9Jx0bQK6mYb3a8Yf3Lq1Zt","object":'
                                              b'"chat.completion.chunk","created":1754900000,"model":'
                                              b'"gpt-4o-2024-08-06","service_tier":"default",'
                                              b'"system_fingerprint":"fp_07871e2ad8","choices":[],')]])
    assert without_usage == EXPECTED["openai_text.sse"][:-1] + [StreamEnd("stop", Usage())]


def test_nothing_after_done_is_read():
    data = (FIXTURES / "openai_text.sse").read_bytes() + b'data: {"error": {"message": "late"}}\n\n'
    assert decode([data]) == EXPECTED["openai_text.sse"]
