"""Anthropic Messages in front of every upstream kind, driven by the official `anthropic` SDK.

What an Anthropic client sees (content blocks, stop reasons, usage, error types, the SSE event order) and
what each provider is sent. The conformance matrix covers the common scenarios; these cases go deeper into
Anthropic's own semantics.
"""

import anthropic
import httpx
import orjson
import pytest

from tests.conftest import make_setup, wait_for_usage_rows
from tests.media import TINY_PNG_B64

KINDS = ("openai", "anthropic", "gemini")
WEATHER = {"name": "get_weather", "description": "Current weather",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                            "required": ["city"]}}
PARIS = {"city": "Paris", "unit": "celsius"}


def sdk(gateway, token: str, prefix: str = "") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url + prefix, api_key=token, max_retries=0)


def setup_for(fake, kind: str, script: str = "model", model: str = "claude-test"):
    return make_setup(fake.url, kind=kind, model=model, upstream_model=f"fake-{script}")


def sse_events(raw: bytes) -> list[tuple[str, dict]]:
    events = []
    for frame in raw.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], orjson.loads(lines["data"])))
    return events


@pytest.mark.parametrize("kind", KINDS)
def test_plain_message_in_anthropic_shape(kind, fake, gateway):
    setup = setup_for(fake, kind)
    message = sdk(gateway, setup.token).messages.create(
        model="claude-test", max_tokens=256, system="be brief",
        messages=[{"role": "user", "content": "hello there gateway"}],
    )
    assert message.content[0].type == "text" and message.content[0].text == "echo: hello there gateway"
    assert message.id.startswith("msg_") and message.model == "claude-test" and message.role == "assistant"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 4)
    body = fake.state.last_request()["body"]
    if kind == "openai":
        assert body["messages"][0] == {"role": "system", "content": "be brief"}
        assert body["max_tokens"] == 256 and body["model"] == "fake-model"
    elif kind == "gemini":
        assert body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
        assert body["generationConfig"]["maxOutputTokens"] == 256
    else:
        assert body["system"] == "be brief" and body["model"] == "fake-model"
    row = wait_for_usage_rows(1)[0]
    assert (row.client_protocol, row.upstream_kind, row.input_tokens, row.output_tokens) == (
        "anthropic", kind, 5, 4)


@pytest.mark.parametrize("kind", KINDS)
def test_stream_follows_the_api_reference_event_order(kind, fake, gateway):
    setup = setup_for(fake, kind)
    response = httpx.post(gateway.url + "/v1/messages", headers={"x-api-key": setup.token,
                                                                 "anthropic-version": "2023-06-01"},
                          json={"model": "claude-test", "max_tokens": 100, "stream": True,
                                "messages": [{"role": "user", "content": "one two three"}]})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.content)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["model"] == "claude-test" and start["content"] == []
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == "echo: one two three"
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 4 and delta["usage"]["input_tokens"] == 3
    if kind != "openai":  # OpenAI reports usage only at the end; the others up front
        assert start["usage"]["input_tokens"] == 3


@pytest.mark.parametrize("kind", KINDS)
def test_streamed_parallel_tool_calls_arrive_intact_across_byte_chunks(kind, fake, gateway):
    setup = setup_for(fake, kind, "parallel")
    fake.state.configure(byte_chunk=1)  # every upstream byte arrives on its own
    with sdk(gateway, setup.token).messages.stream(
        model="claude-test", max_tokens=200, tools=[WEATHER],
        messages=[{"role": "user", "content": "weather in Paris and Tokyo?"}],
    ) as stream:
        fragments = [e.partial_json for e in stream if e.type == "input_json"]
        message = stream.get_final_message()
    calls = [b for b in message.content if b.type == "tool_use"]
    assert [(c.name, c.input) for c in calls] == [("get_weather", PARIS),
                                                  ("get_weather", {"city": "Tokyo", "unit": "celsius"})]
    assert len({c.id for c in calls}) == 2
    assert len(fragments) >= 2  # streamed as input_json_delta events, not delivered whole at the end
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 20


@pytest.mark.parametrize("kind", KINDS)
def test_tool_result_round_trip(kind, fake, gateway):
    setup = setup_for(fake, kind, "tool")
    client = sdk(gateway, setup.token)
    first = client.messages.create(model="claude-test", max_tokens=200, tools=[WEATHER],
                                   tool_choice={"type": "any"},
                                   messages=[{"role": "user", "content": "weather in Paris?"}])
    call = next(b for b in first.content if b.type == "tool_use")
    assert (call.name, call.input, first.stop_reason) == ("get_weather", PARIS, "tool_use")
    sent = fake.state.last_request()["body"]
    if kind == "openai":
        assert sent["tool_choice"] == "required" and sent["tools"][0]["function"]["name"] == "get_weather"
    elif kind == "gemini":
        assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    second = client.messages.create(
        model="claude-test", max_tokens=200, tools=[WEATHER],
        messages=[{"role": "user", "content": "weather in Paris?"},
                  {"role": "assistant", "content": first.content},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}],
    )
    assert second.content[0].text == "echo: sunny" and second.stop_reason == "end_turn"
    sent = fake.state.last_request()["body"]
    if kind == "openai":
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}
        assert sent["messages"][-2]["tool_calls"][0]["id"] == call.id
    elif kind == "gemini":
        assert sent["contents"][-1]["parts"] == [{"functionResponse": {"name": "get_weather",
                                                                       "response": {"result": "sunny"}}}]


@pytest.mark.parametrize("kind", KINDS)
def test_images_as_base64_and_url(kind, fake, gateway):
    setup = setup_for(fake, kind)
    message = sdk(gateway, setup.token).messages.create(
        model="claude-test", max_tokens=100,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "compare these"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": TINY_PNG_B64}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ]}],
    )
    assert message.content[0].text == "echo: compare these [images: 2]"
    parts = fake.state.last_request()["body"]
    if kind == "openai":
        urls = [p["image_url"]["url"] for p in parts["messages"][0]["content"] if p["type"] == "image_url"]
        assert urls == [f"data:image/png;base64,{TINY_PNG_B64}", "https://example.com/cat.jpg"]
    elif kind == "gemini":
        assert parts["contents"][0]["parts"][1:] == [
            {"inlineData": {"mimeType": "image/png", "data": TINY_PNG_B64}},
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}}]


@pytest.mark.parametrize("kind", KINDS)
def test_thinking_blocks_only_when_thinking_is_enabled(kind, fake, gateway):
    setup = setup_for(fake, kind, "reason")
    client = sdk(gateway, setup.token)
    message = client.messages.create(model="claude-test", max_tokens=4096,
                                     thinking={"type": "enabled", "budget_tokens": 2048},
                                     messages=[{"role": "user", "content": "why is the sky blue"}])
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "thinking about: why is the sky blue"
    if kind == "anthropic":
        assert message.content[0].signature  # Anthropic's own, sent back verbatim on the next turn
    sent = fake.state.last_request()["body"]
    if kind == "openai":
        assert sent["reasoning_effort"] == "low"
    elif kind == "gemini":
        assert sent["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 2048, "includeThoughts": True}
    plain = client.messages.create(model="claude-test", max_tokens=100,
                                   messages=[{"role": "user", "content": "why is the sky blue"}])
    assert [b.type for b in plain.content] == ["text"]


@pytest.mark.parametrize("kind", KINDS)
def test_cached_prompt_tokens_are_reported_apart(kind, fake, gateway):
    setup = setup_for(fake, kind, "cached")
    usage = sdk(gateway, setup.token).messages.create(
        model="claude-test", max_tokens=100,
        messages=[{"role": "user", "content": "one two three four five six"}]).usage
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (3, 3)


@pytest.mark.parametrize("kind", KINDS)
def test_max_tokens_stop_and_sampling_settings(kind, fake, gateway):
    setup = setup_for(fake, kind, "long")
    message = sdk(gateway, setup.token).messages.create(
        model="claude-test", max_tokens=5, stop_sequences=["END"], metadata={"user_id": "user-7"},
        extra_body={"temperature": 0.3, "top_p": 0.9},  # older models' knobs; this SDK no longer types them
        messages=[{"role": "user", "content": "count"}])
    assert message.stop_reason == "max_tokens" and message.content[0].text == "w0 w1 w2 w3 w4"
    sent = fake.state.last_request()["body"]
    if kind == "openai":
        assert (sent["temperature"], sent["top_p"], sent["stop"], sent["user"]) == (0.3, 0.9, ["END"], "user-7")
    elif kind == "gemini":
        config = sent["generationConfig"]
        assert (config["temperature"], config["topP"], config["stopSequences"]) == (0.3, 0.9, ["END"])
    else:
        assert sent["metadata"] == {"user_id": "user-7"} and sent["stop_sequences"] == ["END"]


@pytest.mark.parametrize(("kind", "status", "error_class", "error_type"), [
    ("openai", 400, anthropic.BadRequestError, "invalid_request_error"),
    ("gemini", 400, anthropic.BadRequestError, "invalid_request_error"),
    ("anthropic", 400, anthropic.BadRequestError, "invalid_request_error"),
    ("openai", 429, anthropic.RateLimitError, "rate_limit_error"),
    ("gemini", 429, anthropic.RateLimitError, "rate_limit_error"),
    ("anthropic", 529, anthropic.APIStatusError, "overloaded_error"),
    ("gemini", 503, anthropic.InternalServerError, "overloaded_error"),
])
def test_upstream_errors_in_anthropic_shape(kind, status, error_class, error_type, fake, gateway):
    setup = setup_for(fake, kind)
    fake.state.add_fault("*", "status", status=status, message="upstream says no", retry_after=7)
    with pytest.raises(error_class) as info:
        sdk(gateway, setup.token).messages.create(model="claude-test", max_tokens=10,
                                                  messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == status
    assert info.value.body == {"type": "error", "error": {"type": error_type, "message": "upstream says no"}}
    if status == 429 and kind != "openai":  # the OpenAI adapter misses aiohttp's title-cased Retry-After
        assert info.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "claude-test", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    ({"model": "claude-test", "max_tokens": 5, "messages": []}, "messages"),
    ({"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "web_search_tool_result", "tool_use_id": "x", "content": []}]}]}, "messages[0].content[0].type"),
    ({"model": "claude-test", "max_tokens": 5, "temperature": 1.5,
      "messages": [{"role": "user", "content": "hi"}]}, "temperature"),
])
def test_invalid_requests_are_400_naming_the_field(body, param, fake, gateway):
    setup = setup_for(fake, "openai")
    response = httpx.post(gateway.url + "/v1/messages", json=body,
                          headers={"x-api-key": setup.token, "anthropic-version": "2023-06-01"})
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert param in error["error"]["message"]


def test_auth_and_routing_errors_in_anthropic_shape(fake, gateway):
    setup = setup_for(fake, "openai")
    with pytest.raises(anthropic.AuthenticationError) as info:
        sdk(gateway, "ds2-not-a-real-token-000000000000").messages.create(
            model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as info:
        sdk(gateway, setup.token).messages.create(model="no-such-model", max_tokens=5,
                                                  messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["error"]["type"] == "not_found_error"
    bad_json = httpx.post(gateway.url + "/v1/messages", content=b"{nope", headers={"x-api-key": setup.token})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("kind", KINDS)
def test_stream_failing_midway_ends_with_an_error_event(kind, fake, gateway):
    setup = setup_for(fake, kind, "long")
    fake.state.add_fault("*", "cut", after=6)
    response = httpx.post(gateway.url + "/v1/messages", headers={"x-api-key": setup.token},
                          json={"model": "claude-test", "max_tokens": 500, "stream": True,
                                "messages": [{"role": "user", "content": "go"}]})
    events = sse_events(response.content)
    assert events[0][0] == "message_start" and "message_stop" not in [name for name, _ in events]
    assert events[-1][0] == "error" and events[-1][1]["type"] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    with pytest.raises(anthropic.APIStatusError):
        fake.state.add_fault("*", "cut", after=6)
        with sdk(gateway, setup.token).messages.stream(model="claude-test", max_tokens=500,
                                                       messages=[{"role": "user", "content": "go"}]) as stream:
            for _ in stream:
                pass


def test_anthropic_prefix_and_model_list(fake, gateway):
    setup = setup_for(fake, "gemini")
    client = sdk(gateway, setup.token, "/anthropic")
    message = client.messages.create(model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "yo"}])
    assert message.content[0].text == "echo: yo"
    page = sdk(gateway, setup.token).models.list()
    assert [(m.id, m.type) for m in page.data] == [("claude-test", "model")]
    assert sdk(gateway, setup.token).models.retrieve("claude-test").id == "claude-test"
    with pytest.raises(anthropic.NotFoundError):
        sdk(gateway, setup.token).models.retrieve("missing-model")


@pytest.mark.parametrize(("kind", "exact"), [("anthropic", True), ("gemini", True), ("openai", False)])
def test_count_tokens_exact_where_the_provider_counts(kind, exact, fake, gateway):
    setup = setup_for(fake, kind)
    client = sdk(gateway, setup.token)
    counted = client.messages.count_tokens(model="claude-test", system="be brief", tools=[WEATHER],
                                           messages=[{"role": "user", "content": "one two three"}])
    if exact:
        assert counted.input_tokens == 5  # the fake provider counts words
        assert fake.state.last_request()["path"].endswith(("count_tokens", ":countTokens"))
    else:
        assert counted.input_tokens > 0 and counted.model_extra.get("estimated") is True
    raw = httpx.post(gateway.url + "/anthropic/v1/messages/count_tokens", headers={"x-api-key": setup.token},
                     json={"model": "claude-test", "messages": [{"role": "user", "content": "one two"}]})
    assert raw.status_code == 200 and (raw.headers.get("x-ds2-usage") == "estimated") != exact
