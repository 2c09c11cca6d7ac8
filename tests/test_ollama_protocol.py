"""The Ollama surface (`/api/chat`, `/api/generate`, `/api/tags`, `/api/show`, `/api/version`),
driven by the official `ollama` Python client against the gateway and the fake upstream."""

import httpx
import ollama
import orjson
import pytest

from tests.conftest import make_setup
from tests.media import TINY_PNG_B64
from tests.usage_rows import settle_usage, usage_row_of

WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather for a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def client(gateway, token: str) -> ollama.Client:
    return ollama.Client(host=gateway.url, headers={"Authorization": "Bearer " + token})


@pytest.fixture
def routes(fake, gateway):
    setup = make_setup(fake.url, model="llama-test")
    for name in ("llama-tool", "llama-reason"):
        make_setup(fake.url, model=name)
    yield setup
    settle_usage(gateway.proxy_app)


def upstream_body(fake) -> dict:
    return fake.state.last_request()["body"]


def test_chat_plain(routes, gateway, fake):
    reply = client(gateway, routes.token).chat(
        model="llama-test", messages=[{"role": "system", "content": "be brief"},
                                      {"role": "user", "content": "hello there gateway"}], stream=False)
    assert reply.message.role == "assistant" and reply.message.content == "echo: hello there gateway"
    assert reply.done and reply.done_reason == "stop" and reply.model == "llama-test"
    assert (reply.prompt_eval_count, reply.eval_count) == (5, 4)
    assert reply.total_duration > 0 and reply.eval_duration > 0 and reply.created_at.endswith("Z")
    assert upstream_body(fake)["messages"][0] == {"role": "system", "content": "be brief"}
    row = usage_row_of(routes.team.id)
    assert (row.client_protocol, row.input_tokens, row.output_tokens) == ("ollama_chat", 5, 4)


def test_chat_streams_ndjson_by_default(routes, gateway):
    with httpx.stream("POST", gateway.url + "/api/chat", headers={"authorization": f"Bearer {routes.token}"},
                      json={"model": "llama-test", "messages": [{"role": "user", "content": "one two"}]}) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = [orjson.loads(line) for line in response.iter_lines() if line]
    assert [line["done"] for line in lines] == [False, False, False, True]
    assert "".join(line["message"]["content"] for line in lines) == "echo: one two"
    final = lines[-1]
    assert (final["done_reason"], final["prompt_eval_count"], final["eval_count"]) == ("stop", 2, 3)
    assert final["total_duration"] > 0


def test_chat_stream_with_the_client(routes, gateway):
    parts = list(client(gateway, routes.token).chat(
        model="llama-test", messages=[{"role": "user", "content": "a b c"}], stream=True))
    assert "".join(p.message.content for p in parts) == "echo: a b c"
    assert parts[-1].done and parts[-1].eval_count == 4


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_and_result_round_trip(routes, gateway, fake, stream):
    sdk = client(gateway, routes.token)
    messages = [{"role": "user", "content": "weather in Paris?"}]
    reply = sdk.chat(model="llama-tool", messages=messages, tools=[WEATHER_TOOL], stream=stream)
    if stream:
        parts = list(reply)
        calls = [c for p in parts for c in p.message.tool_calls or []]
        reply = parts[-1]
    else:
        calls = reply.message.tool_calls
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"})]
    assert reply.done_reason == "stop" and reply.eval_count == 10
    assert upstream_body(fake)["tools"][0]["function"]["name"] == "get_weather"
    # Ollama tool messages carry no call id: the gateway pairs them with the call by function name.
    messages += [{"role": "assistant", "content": "", "tool_calls": [c.model_dump(exclude_none=True) for c in calls]},
                 {"role": "tool", "content": "sunny", "tool_name": "get_weather"}]
    answer = sdk.chat(model="llama-tool", messages=messages, tools=[WEATHER_TOOL], stream=False)
    assert answer.message.content == "echo: sunny"
    sent = upstream_body(fake)["messages"]
    assert sent[2]["role"] == "tool" and sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"]


def test_images_are_sent_as_inline_data(routes, gateway, fake):
    reply = client(gateway, routes.token).chat(
        model="llama-test", messages=[{"role": "user", "content": "describe this", "images": [TINY_PNG_B64]}])
    assert reply.message.content == "echo: describe this [images: 1]" and reply.prompt_eval_count == 12
    image = upstream_body(fake)["messages"][0]["content"][1]
    assert image == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{TINY_PNG_B64}"}}


@pytest.mark.parametrize(("think", "shown"), [(True, True), (None, True), (False, False)])
def test_thinking(routes, gateway, fake, think, shown):
    reply = client(gateway, routes.token).chat(
        model="llama-reason", messages=[{"role": "user", "content": "why is the sky blue"}], think=think)
    assert reply.message.content == "echo: why is the sky blue"
    assert reply.message.thinking == ("thinking about: why is the sky blue" if shown else None)
    assert ("reasoning_effort" in upstream_body(fake)) is bool(think)


def test_streamed_thinking(routes, gateway):
    parts = list(client(gateway, routes.token).chat(
        model="llama-reason", messages=[{"role": "user", "content": "why"}], think=True, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == "thinking about: why"
    assert "".join(p.message.content for p in parts) == "echo: why"


def test_options_and_format(routes, gateway, fake):
    reply = client(gateway, routes.token).chat(
        model="llama-test", messages=[{"role": "user", "content": "a b c d e"}], format="json",
        options={"temperature": 0.2, "top_p": 0.5, "num_predict": 2, "stop": ["\n\n"], "seed": 7, "top_k": 40})
    assert reply.done_reason == "length" and reply.message.content == "echo: a"
    sent = upstream_body(fake)
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"], sent["stop"], sent["seed"]) == (
        0.2, 0.5, 2, ["\n\n"], 7)
    assert sent["response_format"] == {"type": "json_object"}
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}
    client(gateway, routes.token).chat(model="llama-test", messages=[{"role": "user", "content": "x"}], format=schema)
    assert upstream_body(fake)["response_format"]["json_schema"]["schema"] == schema


@pytest.mark.parametrize("stream", [False, True])
def test_generate(routes, gateway, fake, stream):
    reply = client(gateway, routes.token).generate(
        model="llama-test", prompt="hello there", system="be brief", images=[TINY_PNG_B64], stream=stream)
    if stream:
        parts = list(reply)
        text, reply = "".join(p.response for p in parts), parts[-1]
    else:
        text = reply.response
    assert text == "echo: hello there [images: 1]"
    assert reply.done and reply.done_reason == "stop" and reply.prompt_eval_count == 14 and reply.eval_count == 5
    assert upstream_body(fake)["messages"][0] == {"role": "system", "content": "be brief"}


def test_model_endpoints(routes, gateway, fake):
    sdk = client(gateway, routes.token)
    names = sorted(m.model for m in sdk.list().models)
    assert names == ["llama-reason", "llama-test", "llama-tool"]
    shown = sdk.show("llama-test")
    assert "tools" in shown.capabilities and "vision" in shown.capabilities
    with pytest.raises(ollama.ResponseError) as info:
        sdk.show("no-such-model")
    assert info.value.status_code == 404 and "not found" in info.value.error
    assert httpx.get(gateway.url + "/api/version").json()["version"]


def test_errors_are_ollama_shaped(routes, gateway, fake):
    sdk = client(gateway, routes.token)
    with pytest.raises(ollama.ResponseError) as info:
        sdk.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404 and "does not exist" in info.value.error
    fake.state.add_fault("*", "status", status=400, message="context too long")
    with pytest.raises(ollama.ResponseError) as info:
        list(sdk.chat(model="llama-test", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert info.value.status_code == 400 and info.value.error == "context too long"
    with pytest.raises(ollama.ResponseError) as info:
        client(gateway, "ds2-wrong").list()
    assert info.value.status_code == 401
    bad = httpx.post(gateway.url + "/api/chat", headers={"authorization": f"Bearer {routes.token}"},
                     json={"model": "llama-test", "messages": [{"role": "wizard", "content": "x"}]})
    assert bad.status_code == 400 and bad.json() == {"error": "unknown message role 'wizard'"}


def test_stream_cut_midway_ends_with_an_error_line(routes, gateway, fake):
    fake.state.add_fault("*", "cut", after=3)
    seen = []
    with pytest.raises(ollama.ResponseError):
        for part in client(gateway, routes.token).chat(
                model="llama-test", messages=[{"role": "user", "content": "a b c d e f"}], stream=True):
            seen.append(part.message.content)
    assert seen and not any(p == "" for p in seen)
