"""Golden output of every inbound stream encoder (tests/fixtures/encoders).

One fixed canonical event sequence (reasoning with a signature, an empty text delta, text with multi-byte
characters, two tool calls whose argument fragments interleave, the end with usage) goes through each client
protocol's `stream_encoder`, for a request parsed from a realistic client body by the protocol's own
`parse_request`. The bytes, with only ids and clocks normalized, must equal the checked-in file: any change
of framing (event names, field order, separators, CRLF, the `[DONE]` line, a missing ping) fails loudly. A
second sequence stops midway and ends with the encoder's error framing.

The golden files were reviewed against each vendor's API reference when written, and each frame is also
validated by the vendor's official SDK types below, so a golden file cannot enshrine a shape the SDKs reject.
After an intended change, rewrite them with `DS2API_UPDATE_GOLDEN=1 pytest tests/test_stream_encoders_golden.py`
and review the diff.
"""

import difflib
import os
import re
from pathlib import Path

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from google.genai import types as gtypes
from ollama import ChatResponse, GenerateResponse
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter, ValidationError

from proxy.adapters import CLIENT_PROTOCOLS
from proxy.adapters.base import InboundCall
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

GOLDEN = Path(__file__).parent / "fixtures" / "encoders"
UPDATE = os.environ.get("DS2API_UPDATE_GOLDEN") == "1"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TIME = {"type": "object", "properties": {"tz": {"type": "string"}}}
USER = "Wie ist das Wetter in Zürich, und wie spät ist es in Tokio?"

EVENTS = [
    StreamStart("chatcmpl-golden", "client-model", 1700000000, usage=Usage(30, cached_tokens=10)),
    ReasoningDelta("The user wants "), ReasoningDelta("two tools: 天気 🌦"), ReasoningDelta("", "c2lnbmF0dXJl"),
    TextDelta(""), TextDelta("Héllo "), TextDelta("世界 🎉"),
    ToolCallStart(0, "call_weather", "get_weather"), ToolCallDelta(0, '{"city": "Zü'),
    ToolCallStart(1, "call_time", "get_time"), ToolCallDelta(1, '{"tz": "Asia/Tokyo"}'),
    ToolCallDelta(0, 'rich 🏔"}'),
    StreamEnd("tool_calls", Usage(30, 42, cached_tokens=10, reasoning_tokens=12)),
]
FAILING = EVENTS[:9]  # stops inside the first tool call's arguments
FAILURE = GatewayError("overloaded", "The model is overloaded, try again later.")

# protocol -> (client body, what the URL says, golden file name)
CASES = {
    "openai_chat": ({"model": "client-model", "stream": True, "stream_options": {"include_usage": True},
                     "reasoning_effort": "low", "messages": [{"role": "user", "content": USER}],
                     "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
                               {"type": "function", "function": {"name": "get_time", "parameters": TIME}}]},
                    InboundCall(), "openai_chat.sse"),
    "openai_responses": ({"model": "client-model", "stream": True, "input": USER,
                          "reasoning": {"effort": "low", "summary": "auto"},
                          "tools": [{"type": "function", "name": "get_weather", "parameters": WEATHER},
                                    {"type": "function", "name": "get_time", "parameters": TIME}]},
                         InboundCall(), "openai_responses.sse"),
    "anthropic": ({"model": "client-model", "stream": True, "max_tokens": 2048,
                   "thinking": {"type": "enabled", "budget_tokens": 1024},
                   "messages": [{"role": "user", "content": USER}],
                   "tools": [{"name": "get_weather", "input_schema": WEATHER},
                             {"name": "get_time", "input_schema": TIME}]},
                  InboundCall(), "anthropic.sse"),
    "gemini": ({"contents": [{"role": "user", "parts": [{"text": USER}]}],
                "generationConfig": {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 1024}},
                "tools": [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": WEATHER},
                                                    {"name": "get_time", "parametersJsonSchema": TIME}]}]},
               InboundCall(path_model="client-model", stream=True, sse=True), "gemini.sse"),
    "gemini_array": ({"contents": [{"role": "user", "parts": [{"text": USER}]}],
                      "generationConfig": {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 1024}}},
                     InboundCall(path_model="client-model", stream=True, sse=False), "gemini_array.json"),
    "ollama_chat": ({"model": "client-model", "think": True, "messages": [{"role": "user", "content": USER}],
                     "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
                               {"type": "function", "function": {"name": "get_time", "parameters": TIME}}]},
                    InboundCall(), "ollama_chat.ndjson"),
    "ollama_generate": ({"model": "client-model", "think": True, "prompt": USER}, InboundCall(),
                        "ollama_generate.ndjson"),
}

# Values that change on every run: random ids (numbered by first appearance, so "the same id twice" is still
# checked) and clocks (fixed values of the same JSON type, so the files stay readable by the SDKs).
_IDS = re.compile(rb"\b(resp|rs|msg|fc)_[0-9A-Za-z]{24,32}\b")
_CLOCKS = [
    (re.compile(rb'"responseId":"[^"]+"'), b'"responseId":"<id>"'),
    (re.compile(rb'"(created_at|completed_at)":\d+'), rb'"\1":1700000000'),
    (re.compile(rb'"created_at":"[^"]+"'), b'"created_at":"2023-11-14T22:13:20.000000Z"'),
    (re.compile(rb'"(total_duration|eval_duration)":\d+'), rb'"\1":1000000'),
]


def normalized(raw: bytes) -> bytes:
    seen: dict[bytes, bytes] = {}

    def number(match: re.Match) -> bytes:
        if match.group(0) not in seen:
            count = sum(key.startswith(match.group(1) + b"_") for key in seen)
            seen[match.group(0)] = match.group(1) + b"_<%d>" % (count + 1)
        return seen[match.group(0)]

    raw = _IDS.sub(number, raw)
    for pattern, replacement in _CLOCKS:
        raw = pattern.sub(replacement, raw)
    return raw


def encode(case: str, events: list, failure: GatewayError | None = None) -> bytes:
    body, call, _ = CASES[case]
    protocol = CLIENT_PROTOCOLS[case.removesuffix("_array")]
    encoder = protocol.stream_encoder(protocol.parse_request(body, call), call)
    out = b"".join(encoder.encode(event) for event in events)
    return out + (encoder.error(failure) if failure else b"")


def check_golden(name: str, raw: bytes) -> None:
    path = GOLDEN / name
    actual = normalized(raw)
    if UPDATE:
        path.write_bytes(actual)
    expected = path.read_bytes()
    if actual != expected:
        def lines(raw: bytes) -> list[str]:  # line endings shown, since framing is what this test guards
            return [line.replace("\r", "\\r").replace("\n", "\\n") + "\n"
                    for line in raw.decode().splitlines(keepends=True)]

        diff = difflib.unified_diff(lines(expected), lines(actual), f"{name} (golden)", "encoder")
        pytest.fail("encoder output differs from the golden file:\n" + "".join(diff), pytrace=False)


@pytest.mark.parametrize("case", sorted(CASES))
def test_encoder_output_matches_the_golden_file(case):
    check_golden(CASES[case][2], encode(case, EVENTS))


@pytest.mark.parametrize("case", sorted(CASES))
def test_encoder_error_framing_matches_the_golden_file(case):
    name = CASES[case][2].replace(".", "_error.", 1)
    check_golden(name, encode(case, FAILING, FAILURE))


# --- the golden files as the vendors' SDKs read them ------------------------------------------------


def sse_frames(raw: bytes) -> list[tuple[str | None, dict]]:
    frames = []
    for frame in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not frame:
            continue
        event, data = None, None
        for line in frame.split(b"\n"):
            if line.startswith(b"event: "):
                event = line[7:].decode()
            elif line.startswith(b"data: "):
                data = line[6:]
        assert data is not None, frame
        frames.append((event, data))
    return frames


def test_openai_chat_golden_reads_in_the_sdk():
    frames = sse_frames((GOLDEN / "openai_chat.sse").read_bytes())
    assert frames[-1] == (None, b"[DONE]")
    state = ChatCompletionStreamState()
    for _, data in frames[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(orjson.loads(data)))
    completion = state.get_final_completion()
    message = completion.choices[0].message
    assert message.content == "Héllo 世界 🎉" and completion.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name, orjson.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("call_weather", "get_weather", {"city": "Zürich 🏔"}), ("call_time", "get_time", {"tz": "Asia/Tokyo"})]
    assert message.model_extra["reasoning_content"] == "The user wants two tools: 天気 🌦"
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens,
            usage.completion_tokens_details.reasoning_tokens) == (30, 42, 10, 12)


def test_responses_golden_events_are_valid_sdk_events():
    adapter = TypeAdapter(ResponseStreamEvent)
    gaps = set()
    for name in ("openai_responses.sse", "openai_responses_error.sse"):
        frames = sse_frames((GOLDEN / name).read_bytes())
        for sequence, (event, data) in enumerate(frames):
            payload = orjson.loads(data)
            assert payload["type"] == event and payload["sequence_number"] == sequence
            try:
                adapter.validate_python(payload)
            except ValidationError as exc:
                # the union reports every member; the member named by `type` is the one that counts
                mine = [err for err in exc.errors() if err["loc"][0] == _member(event)]
                assert mine, exc
                gaps |= {(event, err["loc"][1:]) for err in mine}
    assert gaps == set()  # every field the SDK's types require is sent
    final = orjson.loads(sse_frames((GOLDEN / "openai_responses.sse").read_bytes())[-1][1])["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call", "function_call"]
    assert final["output"][3]["arguments"] == '{"tz": "Asia/Tokyo"}'
    assert final["usage"]["input_tokens_details"] == {"cached_tokens": 10, "cache_write_tokens": 0}
    # a stream cut inside a call's arguments: response.failed keeps the fragments already streamed
    failed = orjson.loads(sse_frames((GOLDEN / "openai_responses_error.sse").read_bytes())[-1][1])["response"]
    assert failed["status"] == "failed"
    assert (failed["output"][2]["status"], failed["output"][2]["arguments"]) == ("incomplete", '{"city": "Zü')


def _member(event: str) -> str:
    """The union member's name in pydantic's error locations, e.g. response.completed -> ResponseCompletedEvent."""
    return "Response" + "".join(word.title() for word in re.split(r"[._]", event.removeprefix("response."))) + "Event"


def test_anthropic_golden_accumulates_in_the_sdk():
    adapter = TypeAdapter(RawMessageStreamEvent)
    snapshot, json_bufs = None, {}
    for event, data in sse_frames((GOLDEN / "anthropic.sse").read_bytes()):
        payload = orjson.loads(data)
        assert payload["type"] == event
        if event != "ping":
            snapshot = accumulate_event(event=adapter.validate_python(payload), current_snapshot=snapshot,
                                        json_bufs=json_bufs)
    thinking, text, weather, time = snapshot.content
    assert (thinking.thinking, thinking.signature, text.text) == ("The user wants two tools: 天気 🌦",
                                                                  "c2lnbmF0dXJl", "Héllo 世界 🎉")
    assert (weather.name, weather.input, time.name, time.input) == ("get_weather", {"city": "Zürich 🏔"},
                                                                    "get_time", {"tz": "Asia/Tokyo"})
    assert snapshot.stop_reason == "tool_use"
    assert [payload for event, payload in sse_frames((GOLDEN / "anthropic_error.sse").read_bytes())][-1] == (
        b'{"type":"error","error":{"type":"overloaded_error","message":"The model is overloaded, try again later."}}')


def test_gemini_golden_chunks_are_valid_responses():
    for name in ("gemini.sse", "gemini_error.sse"):
        frames = [orjson.loads(data) for _, data in sse_frames((GOLDEN / name).read_bytes())]
        for payload in frames:
            if "error" not in payload:
                gtypes.GenerateContentResponse.model_validate(payload)
    assert frames[-1]["error"] == {"code": 503, "message": "The model is overloaded, try again later.",
                                   "status": "UNAVAILABLE"}
    chunks = orjson.loads((GOLDEN / "gemini_array.json").read_bytes())
    responses = [gtypes.GenerateContentResponse.model_validate(chunk) for chunk in chunks]
    assert "".join(r.text or "" for r in responses) == "Héllo 世界 🎉"
    assert responses[-1].candidates[0].finish_reason == "STOP"
    assert orjson.loads((GOLDEN / "gemini_array_error.json").read_bytes())[-1]["error"]["status"] == "UNAVAILABLE"


def test_ollama_golden_lines_are_valid_responses():
    for name, model in (("ollama_chat.ndjson", ChatResponse), ("ollama_generate.ndjson", GenerateResponse)):
        lines = [orjson.loads(line) for line in (GOLDEN / name).read_bytes().splitlines()]
        parsed = [model.model_validate(line) for line in lines]
        assert parsed[-1].done and parsed[-1].done_reason == "stop" and not any(p.done for p in parsed[:-1])
    chat = [ChatResponse.model_validate(orjson.loads(line))
            for line in (GOLDEN / "ollama_chat.ndjson").read_bytes().splitlines()]
    calls = [call for line in chat for call in line.message.tool_calls or []]
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("get_weather", {"city": "Zürich 🏔"}), ("get_time", {"tz": "Asia/Tokyo"})]
