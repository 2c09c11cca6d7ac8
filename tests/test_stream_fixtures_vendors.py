"""Golden Anthropic and Gemini streams (tests/fixtures/streams, written from the vendors' API references) fed
to the upstream decoders in every possible chunking, and the client encoders checked against the vendors'
own SDK accumulators and a golden JSON-array stream.

Each fixture has multi-byte UTF-8 text, so some chunk boundaries fall inside a character and, in the tool
fixtures, inside tool-argument JSON; they also carry empty deltas and keep-alive pings.
"""

from pathlib import Path

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event

from proxy.adapters.anthropic_stream import AnthropicDecoder, AnthropicEncoder
from proxy.adapters.gemini_parts import call_id
from proxy.adapters.gemini_stream import GeminiDecoder, GeminiEncoder
from proxy.canonical import (
    CanonicalRequest,
    GatewayError,
    ReasoningConfig,
    ReasoningDelta,
    StreamEnd,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)

FIXTURES = Path(__file__).parent / "fixtures" / "streams"
ZURICH = '{"location":"Zürich 🏔","unit":"celsius"}'

EXPECTED = {
    "anthropic_text.sse": [
        StreamStart("msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "claude-sonnet-4-5", usage=Usage(25, 1)),
        TextDelta("Grüße, "), TextDelta("世界 🌍!"),
        StreamEnd("stop", Usage(25, 15)),
    ],
    "anthropic_tool.sse": [
        StreamStart("msg_014p7gG3wDgGV9EUtLvnow3U", "claude-sonnet-4-5", usage=Usage(600, 2, cached_tokens=128)),
        TextDelta("Checking both cities."),
        ToolCallStart(0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather"),
        ToolCallDelta(0, '{"location":'), ToolCallDelta(0, ' "Zür'), ToolCallDelta(0, 'ich 🏔", "unit": "cel'),
        ToolCallDelta(0, 'sius"}'),
        ToolCallStart(1, "toolu_01LpB4b2SvV3gEWPbYBwN9hX", "get_time"), ToolCallDelta(1, "{}"),
        StreamEnd("tool_calls", Usage(600, 89, cached_tokens=128)),
    ],
    "anthropic_thinking.sse": [
        StreamStart("msg_01VnCe6dDkHFY1kRxQUJbDRd", "claude-sonnet-4-5", usage=Usage(42, 1)),
        ReasoningDelta("I need to find the GCD of 1071 and 462.\n\n1071 = 2 × 462 + 147"),
        ReasoningDelta("\n462 = 3 × 147 + 21"),
        ReasoningDelta("", "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"),
        TextDelta("The GCD is 21."),
        StreamEnd("stop", Usage(42, 64, reasoning_tokens=50)),
    ],
    "gemini_text.sse": [
        StreamStart("Rl8JaL3bOpa9nvgP1ZihmQs", "gemini-2.5-flash", usage=Usage(8)),
        TextDelta("Grüße, "), TextDelta("世界 🌍!"),
        StreamEnd("stop", Usage(8, 6)),
    ],
    "gemini_tool.sse": [
        StreamStart("Rl8JaL3bOpa9nvgP1ZihmQs", "gemini-2.5-flash", usage=Usage(40, 20, cached_tokens=16)),
        ReasoningDelta("", "gemini:CiQB0e2Kb9Qx3Jk="),
        ToolCallStart(0, call_id("get_weather", ZURICH, 0), "get_weather"), ToolCallDelta(0, ZURICH),
        ToolCallStart(1, call_id("get_time", "{}", 1), "get_time"), ToolCallDelta(1, "{}"),
        StreamEnd("tool_calls", Usage(40, 20, cached_tokens=16)),
    ],
    "gemini_thinking.sse": [
        StreamStart("Rl8JaL3bOpa9nvgP1ZihmQs", "gemini-2.5-flash", usage=Usage(8)),
        ReasoningDelta("**Finding the GCD**\n\n1071 = 2 × 462 + 147"), ReasoningDelta("\n462 = 3 × 147 + 21"),
        ReasoningDelta("", "gemini:EpYFCpMFAdHtim8="), TextDelta("The GCD is 21."),
        StreamEnd("stop", Usage(8, 56, reasoning_tokens=50)),
    ],
}
ERRORS = {
    "anthropic_error.sse": ([StreamStart("msg_01ErrorCase0000000000000", "claude-sonnet-4-5", usage=Usage(9, 1)),
                             TextDelta("Partial")], "overloaded"),
    "gemini_error.sse": ([StreamStart("Rl8JaL3bOpa9nvgP1ZihmQs", "gemini-2.5-flash", usage=Usage(8)),
                          TextDelta("Partial")], "overloaded"),
}


def decoder_for(name: str):
    return AnthropicDecoder() if name.startswith("anthropic") else GeminiDecoder()


def decode(name: str, pieces: list[bytes]) -> list:
    decoder = decoder_for(name)
    events = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.close()


def chunkings(data: bytes):
    """The whole stream, one byte at a time, and every split into two pieces."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_stream_decodes_the_same_in_every_chunking(name):
    data = (FIXTURES / name).read_bytes()
    assert data.decode() != data.decode("latin-1")  # multi-byte characters to split
    for pieces in chunkings(data):
        assert decode(name, pieces) == EXPECTED[name], [len(p) for p in pieces]


@pytest.mark.parametrize("name", ["anthropic_tool.sse", "gemini_tool.sse"])
def test_tool_arguments_join_to_the_sent_json(name):
    events = decode(name, [(FIXTURES / name).read_bytes()])
    joined: dict[int, str] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            joined[event.index] = joined.get(event.index, "") + event.arguments
    assert {i: orjson.loads(text) for i, text in joined.items()} == {
        0: {"location": "Zürich 🏔", "unit": "celsius"}, 1: {}}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_error_event_mid_stream_keeps_what_came_before(name):
    data = (FIXTURES / name).read_bytes()
    expected, kind = ERRORS[name]
    for pieces in chunkings(data):
        decoder, events = decoder_for(name), []
        with pytest.raises(GatewayError) as info:
            for piece in pieces:
                events += decoder.feed(piece)
            decoder.close()
        # what came before the error in the same network chunk still reaches the client
        assert events == expected and info.value.kind == kind


@pytest.mark.parametrize(("name", "marker"), [("anthropic_text.sse", b"event: message_delta"),
                                              ("gemini_text.sse", b'data: {"candidates": [{"content": {"parts": '
                                                                  b'[{"text": ""}], "role": "model"}, "index": 0, '
                                                                  b'"finishReason"')])
def test_stream_cut_before_its_end_is_an_error(name, marker):
    data = (FIXTURES / name).read_bytes()
    decoder = decoder_for(name)
    decoder.feed(data[: data.index(marker)])
    with pytest.raises(GatewayError) as info:
        decoder.close()
    assert info.value.kind == "upstream"


def _request(**fields) -> CanonicalRequest:
    return CanonicalRequest(model="client-model", messages=[], **fields)


def _encoded_events() -> list:
    return [StreamStart("chatcmpl-123", "client-model", usage=Usage(30, cached_tokens=10)),
            ReasoningDelta("Let me think"), ReasoningDelta("", "c2lnbmF0dXJl"), TextDelta(""), TextDelta("Héllo "),
            TextDelta("🌍"), ToolCallStart(0, "call_abc", "get_weather"), ToolCallDelta(0, '{"city": "Pa'),
            ToolCallDelta(0, 'ris"}'), StreamEnd("tool_calls", Usage(30, 12, cached_tokens=10, reasoning_tokens=3))]


def _sse_payloads(raw: bytes) -> list[dict]:
    frames = [frame for frame in raw.replace(b"\r\n", b"\n").split(b"\n\n") if frame]
    return [orjson.loads(frame.split(b"data: ", 1)[1]) for frame in frames]


def test_anthropic_encoder_output_accumulates_in_the_sdk():
    encoder = AnthropicEncoder(_request(reasoning=ReasoningConfig(budget_tokens=1024)))
    raw = b"".join(encoder.encode(event) for event in _encoded_events())
    snapshot, json_bufs = None, {}
    for payload in _sse_payloads(raw):
        if payload["type"] != "ping":
            snapshot = accumulate_event(event=payload, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot.id.startswith("msg_") and snapshot.model == "client-model"
    assert [block.type for block in snapshot.content] == ["thinking", "text", "tool_use"]
    thinking, text, tool = snapshot.content
    assert (thinking.thinking, thinking.signature) == ("Let me think", "c2lnbmF0dXJl")
    assert text.text == "Héllo 🌍" and (tool.id, tool.name, tool.input) == ("call_abc", "get_weather",
                                                                          {"city": "Paris"})
    assert snapshot.stop_reason == "tool_use"
    usage = snapshot.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (20, 10, 12)


@pytest.mark.parametrize("name", ["anthropic_text.sse", "anthropic_tool.sse", "anthropic_thinking.sse"])
def test_anthropic_encoder_and_decoder_round_trip(name):
    events = EXPECTED[name]
    encoder = AnthropicEncoder(_request(reasoning=ReasoningConfig(budget_tokens=1024)))
    raw = b"".join(encoder.encode(event) for event in events)
    assert decode(name, [raw]) == events


def test_gemini_sse_encoder_is_read_back_by_the_decoder():
    encoder = GeminiEncoder(_request(reasoning=ReasoningConfig(include_thoughts=True)), sse=True)
    raw = b"".join(encoder.encode(event) for event in _encoded_events())
    assert raw.count(b"\r\n\r\n") == len(_sse_payloads(raw))
    events = decode("gemini", [raw])
    assert [type(e).__name__ for e in events] == ["StreamStart", "ReasoningDelta", "ReasoningDelta", "TextDelta",
                                                   "TextDelta", "ToolCallStart", "ToolCallDelta", "StreamEnd"]
    assert events[1].text == "Let me think" and events[3:5] == [TextDelta("Héllo "), TextDelta("🌍")]
    assert events[2].signature.startswith("gemini:")  # a Gemini client holds it; it comes back unwrapped
    assert events[6].arguments == '{"city":"Paris"}' and events[-1] == StreamEnd(
        "tool_calls", Usage(30, 12, cached_tokens=10, reasoning_tokens=3))


def test_gemini_json_array_stream_matches_the_golden_file():
    encoder = GeminiEncoder(_request(reasoning=ReasoningConfig(include_thoughts=False)), sse=False)
    raw = b"".join(encoder.encode(event) for event in _encoded_events())
    chunks = orjson.loads(raw)
    for chunk in chunks:
        assert chunk.pop("responseId")
    assert chunks == orjson.loads((FIXTURES / "gemini_stream_array.json").read_bytes())
