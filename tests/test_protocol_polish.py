"""Edges of the any-protocol-in, any-provider-out conversion: refusals, finish reasons a client protocol has no
value for, Anthropic betas, the error shape of unrouted paths, and fixtures kept byte for byte.

Adapter-level cases go through each client protocol's own `parse_request` / `render_response` /
`stream_encoder` and are checked against the vendor SDKs' types; the rest goes through the gateway on a real
socket with the official SDKs as clients.
"""

import subprocess
from pathlib import Path

import anthropic
import httpx
import openai
import orjson
import pytest
from anthropic.types import Message as AnthropicMessage
from anthropic.types import RawMessageStreamEvent
from google.genai import types as gtypes
from ollama import ChatResponse
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.adapters import CLIENT_PROTOCOLS, upstream_adapter
from proxy.adapters.anthropic_upstream import anthropic_headers
from proxy.adapters.base import InboundCall
from proxy.canonical import CanonicalResponse, StreamEnd, StreamStart, TextDelta, TextPart, Usage
from tests.conftest import make_setup

REFUSAL = "I’m sorry, I can’t help with that ✋"
USER = "Fill in this form about a dangerous thing."
BODIES = {  # a minimal client body per protocol, and what the URL says
    "openai_chat": ({"model": "m", "messages": [{"role": "user", "content": USER}]}, InboundCall()),
    "openai_responses": ({"model": "m", "input": USER}, InboundCall()),
    "anthropic": ({"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": USER}]}, InboundCall()),
    "gemini": ({"contents": [{"role": "user", "parts": [{"text": USER}]}]},
               InboundCall(path_model="m", stream=True, sse=True)),
    "ollama_chat": ({"model": "m", "messages": [{"role": "user", "content": USER}]}, InboundCall()),
}
ALL_FINISHES = ("stop", "length", "tool_calls", "content_filter", "refusal", "error")


def _request(protocol: str, stream: bool = False):
    body, call = BODIES[protocol]
    request = CLIENT_PROTOCOLS[protocol].parse_request(dict(body), call)
    request.stream = stream
    return request, call


def render(protocol: str, response: CanonicalResponse) -> dict:
    request, _ = _request(protocol)
    return CLIENT_PROTOCOLS[protocol].render_response(response, request)


def stream(protocol: str, events: list) -> bytes:
    request, call = _request(protocol, stream=True)
    encoder = CLIENT_PROTOCOLS[protocol].stream_encoder(request, call)
    return b"".join(encoder.encode(event) for event in events)


def frames(raw: bytes) -> list[dict]:
    """The JSON payloads of an SSE stream or of NDJSON lines ([DONE] left out)."""
    out = []
    for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
        line = line.removeprefix(b"data: ")
        if line.startswith(b"{"):
            out.append(orjson.loads(line))
    return out


# --- finish reasons: every canonical value maps onto one the client protocol has ---------------------------


def _finish_seen(protocol: str, finish: str) -> tuple[str, str]:
    """(what the plain answer says, what the stream says), each checked against the vendor SDK's types."""
    response = CanonicalResponse("resp-1", "m", [TextPart("x")], finish_reason=finish, usage=Usage(3, 1))
    body = render(protocol, response)
    raw = stream(protocol, [StreamStart("chatcmpl-1", "m"), TextDelta("x"), StreamEnd(finish, Usage(3, 1))])
    if protocol == "openai_chat":
        chunks = [ChatCompletionChunk.model_validate(chunk) for chunk in frames(raw)]
        return ChatCompletion.model_validate(body).choices[0].finish_reason, chunks[-1].choices[0].finish_reason
    if protocol == "openai_responses":
        events = [TypeAdapter(ResponseStreamEvent).validate_python(event) for event in frames(raw)]
        return Response.model_validate(body).status, events[-1].response.status
    if protocol == "anthropic":
        adapter = TypeAdapter(RawMessageStreamEvent)
        delta = [adapter.validate_python(e) for e in frames(raw) if e["type"] == "message_delta"][0]
        return AnthropicMessage.model_validate(body).stop_reason, delta.delta.stop_reason
    if protocol == "gemini":
        plain = body["candidates"][0]["finishReason"]
        streamed = [chunk["candidates"][0].get("finishReason") for chunk in frames(raw)][-1]
        for value in (plain, streamed):  # the SDK's enum accepts unknown values, so check its members
            assert value in gtypes.FinishReason.__members__, value
        return plain, streamed
    lines = [ChatResponse.model_validate(line) for line in frames(raw)]
    return ChatResponse.model_validate(body).done_reason, lines[-1].done_reason


EXPECTED_FINISH = {  # canonical -> what each protocol shows, plain and streamed alike
    "openai_chat": {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
                    "content_filter": "content_filter", "refusal": "stop", "error": "stop"},
    "openai_responses": {"stop": "completed", "length": "incomplete", "tool_calls": "completed",
                         "content_filter": "incomplete", "refusal": "completed", "error": "completed"},
    "anthropic": {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                  "content_filter": "refusal", "refusal": "refusal", "error": "end_turn"},
    "gemini": {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY",
               "refusal": "SAFETY", "error": "OTHER"},
    "ollama_chat": {"stop": "stop", "length": "length", "tool_calls": "stop", "content_filter": "stop",
                    "refusal": "stop", "error": "stop"},
}


@pytest.mark.parametrize("protocol", sorted(BODIES))
@pytest.mark.parametrize("finish", ALL_FINISHES)
def test_every_canonical_finish_is_a_valid_value_of_the_client_protocol(protocol, finish):
    """E.g. Gemini's MALFORMED_FUNCTION_CALL reads as the canonical "error", which Chat Completions has no
    value for: its clients get "stop", and the SDK's types accept every value sent."""
    expected = EXPECTED_FINISH[protocol][finish]
    assert _finish_seen(protocol, finish) == (expected, expected)


# --- refusals --------------------------------------------------------------------------------------------


def _openai_refusal_response() -> CanonicalResponse:
    body = {"id": "chatcmpl-R", "object": "chat.completion", "created": 1754908000, "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": None, "refusal": REFUSAL}}],
            "usage": {"prompt_tokens": 58, "completion_tokens": 11, "total_tokens": 69}}
    request, _ = _request("openai_chat")
    return upstream_adapter("openai").parse_response(orjson.dumps(body), request)


def test_an_openai_refusal_is_canonical_refusal_text():
    response = _openai_refusal_response()
    assert response.parts == [TextPart(REFUSAL, refusal=True)] and response.finish_reason == "refusal"


def test_refusal_reaches_every_client_protocol_plain():
    response = _openai_refusal_response()
    chat = ChatCompletion.model_validate(render("openai_chat", response))
    assert (chat.choices[0].message.refusal, chat.choices[0].message.content) == (REFUSAL, None)
    assert chat.choices[0].finish_reason == "stop"  # as OpenAI ends a refusal
    responses = Response.model_validate(render("openai_responses", response))
    assert responses.status == "completed"
    assert [part.model_dump() for part in responses.output[0].content] == [{"type": "refusal", "refusal": REFUSAL}]
    claude = AnthropicMessage.model_validate(render("anthropic", response))
    assert (claude.content[0].text, claude.stop_reason) == (REFUSAL, "refusal")
    gemini = gtypes.GenerateContentResponse.model_validate(render("gemini", response))
    assert (gemini.text, gemini.candidates[0].finish_reason) == (REFUSAL, gtypes.FinishReason.SAFETY)
    ollama = ChatResponse.model_validate(render("ollama_chat", response))
    assert (ollama.message.content, ollama.done_reason) == (REFUSAL, "stop")


REFUSAL_EVENTS = [StreamStart("chatcmpl-R", "m", 1754908000), TextDelta("Let me see. "),
                  TextDelta("I’m sorry,", refusal=True), TextDelta(" I can’t help with that ✋", refusal=True),
                  StreamEnd("refusal", Usage(58, 11))]


def test_refusal_reaches_an_openai_chat_client_streamed():
    state = ChatCompletionStreamState()
    for chunk in frames(stream("openai_chat", REFUSAL_EVENTS)):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    choice = state.get_final_completion().choices[0]
    assert (choice.message.content, choice.message.refusal, choice.finish_reason) == ("Let me see. ", REFUSAL, "stop")


def test_refusal_is_a_refusal_content_part_in_a_responses_stream():
    events = frames(stream("openai_responses", REFUSAL_EVENTS))
    for event in events:
        TypeAdapter(ResponseStreamEvent).validate_python(event)
    kinds = [event["type"] for event in events]
    assert kinds[2:] == [
        "response.output_item.added",
        "response.content_part.added", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done",
        "response.content_part.added", "response.refusal.delta", "response.refusal.delta", "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done", "response.completed"]
    refusal_parts = [e for e in events if e["type"].startswith("response.refusal")]
    assert {e["content_index"] for e in refusal_parts} == {1} and refusal_parts[-1]["refusal"] == REFUSAL
    final = Response.model_validate(events[-1]["response"])
    assert [part.type for part in final.output[0].content] == ["output_text", "refusal"]
    assert (final.output[0].content[0].text, final.output[0].content[1].refusal) == ("Let me see. ", REFUSAL)


def test_refusal_is_text_with_a_refusal_stop_in_anthropic_and_gemini_streams():
    anthropic_events = frames(stream("anthropic", REFUSAL_EVENTS))
    text = "".join(e["delta"]["text"] for e in anthropic_events if e["type"] == "content_block_delta")
    stop = [e["delta"]["stop_reason"] for e in anthropic_events if e["type"] == "message_delta"]
    assert (text, stop) == ("Let me see. " + REFUSAL, ["refusal"])
    gemini_chunks = frames(stream("gemini", REFUSAL_EVENTS))
    assert "".join(p["text"] for c in gemini_chunks for p in c["candidates"][0]["content"]["parts"]) == (
        "Let me see. " + REFUSAL)
    assert gemini_chunks[-1]["candidates"][0]["finishReason"] == "SAFETY"


# --- Anthropic betas reach Anthropic upstreams only --------------------------------------------------------


def test_client_betas_join_the_providers_and_the_api_version_stays_the_gateways():
    headers = anthropic_headers("sk-ant-x", {"Anthropic-Beta": "prompt-caching-2024-07-31", "x-team": "a"},
                                "context-1m-2025-08-07, not a name!,prompt-caching-2024-07-31,,")
    assert headers["anthropic-beta"] == "prompt-caching-2024-07-31,context-1m-2025-08-07"
    assert (headers["anthropic-version"], headers["x-team"]) == ("2023-06-01", "a")
    assert "anthropic-beta" not in anthropic_headers("sk-ant-x", {}, "")


def test_anthropic_beta_is_forwarded_from_anthropic_clients_to_anthropic_upstreams(fake, gateway):
    setup = make_setup(fake.url, kind="anthropic", model="claude-polish")
    client = anthropic.Anthropic(base_url=gateway.url, api_key=setup.token, max_retries=0, default_headers={
        "anthropic-beta": "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14",
        "anthropic-version": "2099-01-01"})
    client.messages.create(model="claude-polish", max_tokens=32, messages=[{"role": "user", "content": "hi"}])
    sent = fake.state.last_request()["headers"]
    assert sent["anthropic-beta"] == "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
    # the version the gateway's conversions are written for, not one it cannot know
    assert sent["anthropic-version"] == "2023-06-01"
    # token counting carries them too (a beta can change what counts, e.g. context management)
    client.messages.count_tokens(model="claude-polish", messages=[{"role": "user", "content": "hi"}])
    sent = fake.state.last_request()
    assert sent["path"] == "/v1/messages/count_tokens"
    assert sent["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"

    # an OpenAI client's headers are not the Anthropic provider's business
    chat = openai.OpenAI(base_url=gateway.url + "/v1", api_key=setup.token, max_retries=0,
                         default_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
    chat.chat.completions.create(model="claude-polish", messages=[{"role": "user", "content": "hi"}])
    assert "anthropic-beta" not in fake.state.last_request()["headers"]


def test_anthropic_beta_does_not_reach_other_providers(fake, gateway):
    setup = make_setup(fake.url, kind="openai", model="gpt-polish")
    client = anthropic.Anthropic(base_url=gateway.url, api_key=setup.token, max_retries=0,
                                 default_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
    client.messages.create(model="gpt-polish", max_tokens=32, messages=[{"role": "user", "content": "hi"}])
    assert "anthropic-beta" not in fake.state.last_request()["headers"]


# --- unrouted paths answer in their API family's error shape ------------------------------------------------


@pytest.mark.parametrize("method, path, status, family, allow", [
    ("POST", "/v1beta/models/gemini-x:frobnicate", 404, "gemini", None),
    ("POST", "/v1/models/gemini-x:frobnicate", 404, "gemini", None),
    ("GET", "/v1beta/cachedContents", 404, "gemini", None),
    ("GET", "/v1beta/models/gemini-x:generateContent", 405, "gemini", "POST"),
    ("POST", "/anthropic/v1/complete", 404, "anthropic", None),
    ("POST", "/v1/messages/batches", 404, "anthropic", None),
    ("GET", "/v1/messages", 405, "anthropic", "POST"),
    ("DELETE", "/anthropic/v1/messages/count_tokens", 405, "anthropic", "POST"),
    ("POST", "/v1/assistants", 404, "openai", None),
    ("GET", "/v1/chat/completions", 405, "openai", "POST"),
    ("GET", "/api/ps", 404, "ollama", None),
])
def test_unrouted_paths_get_their_api_familys_error_shape(method, path, status, family, allow, gateway):
    answer = httpx.request(method, gateway.url + path, json={})
    assert answer.status_code == status and answer.headers.get("allow") == allow
    body = answer.json()
    if family == "gemini":
        assert body["error"]["code"] == status
        assert body["error"]["status"] == ("NOT_FOUND" if status == 404 else "INVALID_ARGUMENT")
        assert path in body["error"]["message"]
    elif family == "anthropic":
        assert body["type"] == "error"
        assert body["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    elif family == "openai":
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "invalid_request_error"  # as OpenAI answers an unknown URL
    else:
        assert set(body) == {"error"} and isinstance(body["error"], str)


# --- fixtures are compared byte for byte ---------------------------------------------------------------


def test_fixtures_are_never_converted_at_checkout():
    """Some golden streams use CRLF on purpose; a checkout with `core.autocrlf` must not rewrite them."""
    root = Path(__file__).resolve().parent.parent
    crlf = "tests/fixtures/streams/openai_tool_interleaved.sse"
    assert b"\r\n" in (root / crlf).read_bytes()
    out = subprocess.run(["git", "check-attr", "text", "--", crlf, "tests/fixtures/encoders/gemini.sse"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [f"{crlf}: text: unset", "tests/fixtures/encoders/gemini.sse: text: unset"]
