"""The SSE parser reads every framing a provider may send exactly as the plain line-by-line reading of the
SSE field grammar does, however the bytes are cut into network chunks.

`reference_events` below is that plain reading (the gateway's original parser): a line at a time, a
trailing CR dropped, `data` lines gathered, `event` remembered, comments and other fields ignored, the
event sent on a blank line if it has data. The parser's quicker paths for the common shapes must never
give anything else. The upstream decoders read an event's data undecoded, and still as its text would read:
invalid UTF-8 becomes U+FFFD, broken JSON an upstream error.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.adapters.openai_upstream import OpenAIChatDecoder
from proxy.canonical import GatewayError, TextDelta
from proxy.sse import SSEEvent, SSEParser

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True)


def reference_events(stream: bytes) -> list[SSEEvent]:
    """The whole stream read line by line, as if it arrived in one piece and then ended."""
    lines = stream.split(b"\n")
    last = lines.pop().rstrip(b"\r")  # what is left when the stream ends without a newline
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    events, event, data = [], None, []
    for line in [*lines, last, b""] if last else [*lines, b""]:
        if not line:
            if data:
                events.append(SSEEvent(event, b"\n".join(data)))
            event, data = None, []
            continue
        if line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", errors="replace")
    return events


def parse(pieces: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.close()


def every_split(stream: bytes):
    yield [stream]
    yield [stream[i : i + 1] for i in range(len(stream))]
    for cut in range(1, len(stream)):
        yield [stream[:cut], stream[cut:]]


def assert_reads_like_reference(stream: bytes) -> list[SSEEvent]:
    expected = reference_events(stream)
    for pieces in every_split(stream):
        assert parse(pieces) == expected, [len(p) for p in pieces]
    return expected


# --- the framings providers send -----------------------------------------------------------------------


def test_openai_data_lines_and_done():
    stream = b'data: {"a":1}\n\ndata: {"b":"h\xc3\xa9"}\n\ndata: [DONE]\n\n'
    assert assert_reads_like_reference(stream) == [
        SSEEvent(None, b'{"a":1}'), SSEEvent(None, b'{"b":"h\xc3\xa9"}'), SSEEvent(None, b"[DONE]")]


def test_anthropic_event_and_data():
    stream = (b'event: message_start\ndata: {"type":"message_start"}\n\n'
              b'event: ping\ndata: {"type": "ping"}\n\n'
              b'event: content_block_delta\ndata: {"text":"\xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x8c\x8d"}\n\n')
    assert assert_reads_like_reference(stream) == [
        SSEEvent("message_start", b'{"type":"message_start"}'), SSEEvent("ping", b'{"type": "ping"}'),
        SSEEvent("content_block_delta", '{"text":"世界 🌍"}'.encode())]


def test_crlf_line_endings():
    stream = b'data: {"a":1}\r\n\r\nevent: e\r\ndata: x\r\n\r\n'
    assert assert_reads_like_reference(stream) == [SSEEvent(None, b'{"a":1}'), SSEEvent("e", b"x")]


def test_utf8_character_split_across_chunks_is_whole():
    stream = 'data: {"t":"🌍"}\n\n'.encode()
    cut = stream.index(b"\xf0") + 2
    assert parse([stream[:cut], stream[cut:]]) == [SSEEvent(None, '{"t":"🌍"}'.encode())]
    assert_reads_like_reference(stream)


def test_comments_and_keep_alives_are_skipped():
    stream = b": keep-alive\n\ndata: a\n: OPENROUTER PROCESSING\ndata: b\n\n:\n\n"
    assert assert_reads_like_reference(stream) == [SSEEvent(None, b"a\nb")]


def test_multi_line_data_joins_with_newlines():
    stream = b"data: first\ndata:second\ndata\ndata: \n\n"
    assert assert_reads_like_reference(stream) == [SSEEvent(None, b"first\nsecond\n\n")]


def test_id_retry_and_unknown_fields_are_ignored():
    stream = b"id: 7\nretry: 1000\nevent: update\nfoo: bar\ndata: x\n\nid: 8\n\n"
    assert assert_reads_like_reference(stream) == [SSEEvent("update", b"x")]


def test_blank_line_runs_and_events_without_data():
    stream = b"\n\n\ndata: a\n\n\n\n\nevent: lonely\n\n\r\n\r\ndata: b\n\n\n"
    assert assert_reads_like_reference(stream) == [SSEEvent(None, b"a"), SSEEvent(None, b"b")]


def test_empty_data_is_an_event_but_a_missing_one_is_not():
    stream = b"data:\n\nevent: x\n\ndata: \n\n"
    assert assert_reads_like_reference(stream) == [SSEEvent(None, b""), SSEEvent(None, b"")]


def test_space_after_colon_is_dropped_once():
    stream = b"data:  two spaces\n\nevent:  e\ndata:x\n\n"
    assert assert_reads_like_reference(stream) == [SSEEvent(None, b" two spaces"), SSEEvent(" e", b"x")]


@pytest.mark.parametrize("stream", [b"data: cut short", b"data: cut short\r", b"data: a\ndata: b\r\r",
                                    b"data: a\n", b"event: e\ndata: x\r\n"])
def test_stream_ending_without_blank_line_still_sends_its_event(stream):
    assert_reads_like_reference(stream)
    assert parse([stream])


def test_carriage_returns_inside_and_doubled():
    stream = b"data: a\rb\n\ndata: c\r\r\n\r\ndata: d\r\n\n"
    assert assert_reads_like_reference(stream) == [SSEEvent(None, b"a\rb"), SSEEvent(None, b"c\r"),
                                                   SSEEvent(None, b"d")]


def test_invalid_utf8_in_event_name_is_replaced_and_data_kept_as_bytes():
    stream = b"event: bad\xff\ndata: \xfe\n\n"
    assert assert_reads_like_reference(stream) == [SSEEvent("bad\ufffd", b"\xfe")]


# --- any framing, any chunking -------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12).map(str.encode)
_line = st.one_of(
    st.builds(lambda v: b"data: " + v, _text),
    st.builds(lambda v: b"data:" + v, _text),
    st.builds(lambda v: b"event: " + v, _text),
    st.builds(lambda v: b"event:" + v, _text),
    st.builds(lambda v: b":" + v, _text),
    st.sampled_from([b"", b"data", b"event", b"id: 1", b"retry: 5", b"data: [DONE]", b"\r", b"foo:bar"]),
    st.binary(max_size=8).filter(lambda b: b"\n" not in b),
)


@st.composite
def streams_and_chunkings(draw) -> tuple[bytes, list[bytes]]:
    lines = draw(st.lists(_line, max_size=25))
    endings = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=len(lines), max_size=len(lines)))
    stream = b"".join(line + end for line, end in zip(lines, endings, strict=True))
    stream += draw(st.sampled_from([b"", b"\n", b"\r\n", b"data: tail"]))
    cuts = sorted(draw(st.sets(st.integers(0, len(stream)), max_size=8)))
    bounds = [0, *cuts, len(stream)]
    return stream, [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@PROPERTY
@given(streams_and_chunkings())
def test_any_stream_in_any_chunking_reads_like_the_reference(case):
    stream, pieces = case
    assert parse(pieces) == reference_events(stream)


# --- decoders read the undecoded data as they read text ------------------------------------------------


def test_invalid_utf8_in_a_provider_event_reads_as_replacement_characters():
    decoder = OpenAIChatDecoder()
    events = decoder.feed(b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"h\xffi"}}]}\n\n')
    assert events[1:] == [TextDelta("h\ufffdi")]


def test_malformed_provider_event_is_an_upstream_error():
    decoder = OpenAIChatDecoder()
    assert decoder.feed(b'data: {"id":"c1","choices":[]}\n\ndata: {"broken\n\n') != []
    with pytest.raises(GatewayError) as info:
        decoder.feed(b"")
    assert info.value.kind == "upstream"
