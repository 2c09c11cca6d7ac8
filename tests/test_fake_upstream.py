"""The fake upstream speaks the real wire formats: the official SDKs parse everything it sends."""

from __future__ import annotations

import asyncio
import json

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.fakes.upstream import FakeUpstream

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ANTHROPIC_TOOL = {
    "name": "lookup_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(upstream):
    upstream.state.reset()
    return upstream


@pytest.fixture
def oai(fake):
    return openai.OpenAI(api_key="sk-test-1234", base_url=fake.url + "/v1", max_retries=0)


@pytest.fixture
def claude(fake):
    return anthropic.Anthropic(api_key="sk-ant-test-5678", base_url=fake.url, max_retries=0)


@pytest.fixture
def gemini(fake):
    options = genai_types.HttpOptions(
        base_url=fake.url, retry_options=genai_types.HttpRetryOptions(attempts=1)
    )
    return genai.Client(api_key="gm-test-9012", http_options=options)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# -- OpenAI --------------------------------------------------------------------------------
def test_openai_plain_completion_usage_and_ratelimit_headers(oai, fake):
    fake.state.set_ratelimit("sk-test-1234", remaining_requests=7, remaining_tokens=700)
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "be brief"}, *user("hello big world")],
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello big world"
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 4)
    assert raw.headers["x-ratelimit-remaining-requests"] == "7"
    assert raw.headers["x-ratelimit-remaining-tokens"] == "700"
    assert raw.headers["x-ratelimit-reset-requests"] == "1s"


def test_openai_stream_one_chunk_per_word_with_usage(oai):
    stream = oai.chat.completions.create(
        model="fake-model",
        messages=user("grüße aus Köln"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert pieces == ["echo: ", "grüße ", "aus ", "Köln"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4


def test_openai_parallel_tool_calls_stream_in_fragments(oai):
    with oai.chat.completions.stream(
        model="fake-parallel", messages=user("weather?"), tools=[WEATHER_TOOL]
    ) as stream:
        deltas = [e.arguments_delta for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [c.id for c in calls] == ["call_fake_1", "call_fake_2"]
    assert {c.function.name for c in calls} == {"lookup_weather"}
    assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris", "Tokyo"]
    assert final.choices[0].finish_reason == "tool_calls"
    fragments = [d for d in deltas if d]
    assert len(fragments) == 18 and all(3 <= len(d) <= 5 for d in fragments)


def test_openai_tool_result_ends_the_loop(oai):
    messages = [
        *user("weather?"),
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_fake_1",
                    "type": "function",
                    "function": {"name": "lookup_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_fake_1", "content": "22 degrees"},
    ]
    completion = oai.chat.completions.create(model="fake-tool", messages=messages, tools=[WEATHER_TOOL])
    assert completion.choices[0].message.content == "echo: 22 degrees"


def test_openai_reasoning_images_and_max_tokens(oai):
    completion = oai.chat.completions.create(
        model="fake-reason",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                ],
            }
        ],
        max_completion_tokens=3,
    )
    message = completion.choices[0].message
    assert message.reasoning_content == "thinking about: what is this"
    assert message.content == "echo: what is"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.prompt_tokens == 13
    assert completion.usage.completion_tokens_details.reasoning_tokens == 5


def test_openai_embeddings_models_and_cached_tokens(oai):
    vectors = oai.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [len(d.embedding) for d in vectors.data] == [8, 8]
    again = oai.embeddings.create(model="text-embedding-3-small", input="a", encoding_format="float")
    assert again.data[0].embedding == pytest.approx(vectors.data[0].embedding, abs=1e-6)
    assert "fake-tool" in {m.id for m in oai.models.list()}
    cached = oai.chat.completions.create(model="fake-cached", messages=user("one two three four"))
    assert cached.usage.prompt_tokens_details.cached_tokens == 2


# -- Anthropic -----------------------------------------------------------------------------
def test_anthropic_plain_message_and_headers(claude):
    raw = claude.messages.with_raw_response.create(
        model="fake-cached", max_tokens=50, system="be brief", messages=user("hello there")
    )
    message = raw.parse()
    assert message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn"
    assert (
        message.usage.input_tokens,
        message.usage.cache_read_input_tokens,
        message.usage.output_tokens,
    ) == (2, 2, 3)
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "9999"
    assert raw.headers["request-id"].startswith("req_")


def test_anthropic_stream_thinking_and_tool_use(claude):
    with claude.messages.stream(
        model="fake-reason-tool", max_tokens=100, messages=user("weather in paris?"), tools=[ANTHROPIC_TOOL]
    ) as stream:
        kinds = [e.type for e in stream]
        message = stream.get_final_message()
    assert kinds[0] == "message_start" and "ping" not in kinds  # the SDK swallows pings
    thinking, tool_use = message.content
    assert thinking.thinking == "thinking about: weather in paris?" and thinking.signature
    assert (tool_use.id, tool_use.name, tool_use.input) == (
        "toolu_fake_1",
        "lookup_weather",
        {"city": "Paris", "unit": "celsius"},
    )
    assert message.stop_reason == "tool_use"


def test_anthropic_long_text_stream_and_count_tokens(claude):
    with claude.messages.stream(model="fake-long", max_tokens=1000, messages=user("go")) as stream:
        text = "".join(stream.text_stream)
    assert text.split() == [f"w{i}" for i in range(200)]
    assert claude.messages.count_tokens(model="fake-model", messages=user("a b c")).input_tokens == 3
    assert "fake-reason" in {m.id for m in claude.models.list()}


def test_anthropic_requires_version_header_and_overloaded_fault(claude, fake):
    response = httpx.post(fake.url + "/v1/messages", headers={"x-api-key": "k"}, json={})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    fake.state.add_fault("sk-ant-test-5678", "status", status=529, count=1)
    with pytest.raises(anthropic.OverloadedError) as excinfo:
        claude.messages.create(model="fake-model", max_tokens=10, messages=user("hi"))
    assert excinfo.value.body["error"]["type"] == "overloaded_error"
    assert (
        claude.messages.create(model="fake-model", max_tokens=10, messages=user("hi")).content[0].text
        == "echo: hi"
    )


# -- Gemini --------------------------------------------------------------------------------
def test_gemini_plain_and_stream(gemini, fake):
    response = gemini.models.generate_content(model="fake-cached", contents="hello gemini world")
    assert response.text == "echo: hello gemini world"
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.cached_content_token_count) == (
        3,
        4,
        1,
    )
    chunks = list(gemini.models.generate_content_stream(model="fake-reason", contents="hi"))
    thoughts = "".join(p.text for c in chunks for p in c.candidates[0].content.parts if p.thought)
    assert thoughts == "thinking about: hi"
    assert (
        "".join(p.text for c in chunks for p in c.candidates[0].content.parts if not p.thought) == "echo: hi"
    )
    assert chunks[-1].usage_metadata.thoughts_token_count == 3
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP
    array = httpx.post(
        f"{fake.url}/v1beta/models/fake-model:streamGenerateContent?key=gm-test-9012",
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    ).json()  # without alt=sse: one JSON array, streamed
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in array) == "echo: hi"


def test_gemini_v1beta_tools_count_and_embed(fake):
    options = genai_types.HttpOptions(base_url=fake.url, api_version="v1beta")
    client = genai.Client(api_key="gm-test-9012", http_options=options)
    tool = genai_types.Tool(function_declarations=[genai_types.FunctionDeclaration(name="lookup_weather")])
    response = client.models.generate_content(
        model="fake-parallel", contents="weather?", config=genai_types.GenerateContentConfig(tools=[tool])
    )
    assert [(c.name, c.args["city"]) for c in response.function_calls] == [
        ("lookup_weather", "Paris"),
        ("lookup_weather", "Tokyo"),
    ]
    assert fake.state.last_request()["path"] == "/v1beta/models/fake-parallel:generateContent"
    assert client.models.count_tokens(model="fake-model", contents="a b c d").total_tokens == 4
    embedded = client.models.embed_content(model="gemini-embedding-001", contents=["x", "y"])
    assert [len(e.values) for e in embedded.embeddings] == [8, 8]


def test_gemini_rate_limit_carries_retry_info(gemini, fake):
    fake.state.add_fault("*", "status", status=429, retry_after=7)
    with pytest.raises(genai_errors.ClientError) as excinfo:
        gemini.models.generate_content(model="fake-model", contents="hi")
    assert excinfo.value.code == 429 and excinfo.value.status == "RESOURCE_EXHAUSTED"
    assert excinfo.value.details["error"]["details"][0]["retryDelay"] == "7s"


# -- auth, faults, control -----------------------------------------------------------------
def test_unknown_keys_get_401_in_each_shape(fake, oai, claude, gemini):
    fake.state.configure(invalid_keys=["sk-test-1234", "sk-ant-test-5678", "gm-test-9012"])
    with pytest.raises(openai.AuthenticationError):
        oai.models.list()
    with pytest.raises(anthropic.AuthenticationError):
        claude.messages.create(model="fake-model", max_tokens=10, messages=user("hi"))
    with pytest.raises(genai_errors.ClientError) as excinfo:
        gemini.models.generate_content(model="fake-model", contents="hi")
    assert excinfo.value.status == "UNAUTHENTICATED"
    assert httpx.post(fake.url + "/v1/chat/completions", json={}).json()["error"]["code"] == "invalid_api_key"


def test_rate_limit_fault_then_sdk_retry_succeeds(fake):
    fake.state.add_fault("sk-test-1234", "status", status=429, retry_after=0.01, count=1)
    strict = openai.OpenAI(api_key="sk-test-1234", base_url=fake.url + "/v1", max_retries=0)
    with pytest.raises(openai.RateLimitError) as excinfo:
        strict.models.list()
    assert excinfo.value.response.headers["retry-after"] == "0.01"
    assert excinfo.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    fake.state.add_fault("sk-test-1234", "status", status=429, retry_after=0.01, count=1)
    retrying = openai.OpenAI(api_key="sk-test-1234", base_url=fake.url + "/v1", max_retries=1)
    assert (
        retrying.chat.completions.create(model="m", messages=user("x")).choices[0].message.content
        == "echo: x"
    )
    assert fake.state.stats()["keys"]["sk-test-1234"]["requests"] == 3


def test_cut_stream_closes_without_done(oai, fake):
    fake.state.add_fault("*", "cut", after=3)
    received = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
        for chunk in oai.chat.completions.create(model="fake-long", messages=user("go"), stream=True):
            received.append(chunk)
    assert len(received) == 3


def test_reset_malformed_and_huge(fake):
    headers = {"Authorization": "Bearer sk-x"}
    body = {"model": "fake-model", "messages": user("hi")}
    url = fake.url + "/v1/chat/completions"
    fake.state.add_fault("*", "reset", count=1)
    with pytest.raises(httpx.TransportError):
        httpx.post(url, headers=headers, json=body)
    fake.state.add_fault("*", "malformed", count=1)
    with pytest.raises(json.JSONDecodeError):
        httpx.post(url, headers=headers, json=body).json()
    fake.state.add_fault("*", "malformed", count=1, after=1)
    lines = httpx.post(url, headers=headers, json={**body, "stream": True}).text.split("\n\n")
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[1].removeprefix("data: "))
    fake.state.add_fault("*", "huge", count=1, size=300_000)
    content = httpx.post(url, headers=headers, json=body).json()["choices"][0]["message"]["content"]
    assert len(content) == 300_000


def test_byte_chunks_split_characters_but_sdks_reassemble(oai, fake):
    fake.state.configure(byte_chunk=3)
    stream = oai.chat.completions.create(model="fake-model", messages=user("ünïcödé ✓ 完成"), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "echo: ünïcödé ✓ 完成"


def test_first_chunk_arrives_while_the_fake_is_still_sending(fake):
    fake.state.configure(chunk_delay=0.05)
    body = {"model": "fake-long", "max_tokens": 20, "messages": user("go"), "stream": True}
    headers = {"Authorization": "Bearer sk-live"}
    with httpx.stream("POST", fake.url + "/v1/chat/completions", headers=headers, json=body) as response:
        first = next(response.iter_lines())
        assert first.startswith("data: ")
        assert fake.state.stats()["keys"]["sk-live"]["in_flight"] == 1
    fake.state.configure(chunk_delay=0)


async def test_stats_count_concurrency_tokens_and_masked_last_request(fake):
    fake.state.add_fault("sk-many", "slow", delay=0.3)
    async with httpx.AsyncClient(base_url=fake.url, headers={"Authorization": "Bearer sk-many"}) as client:
        body = {"model": "fake-model", "messages": user("one two")}
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(5)))
        assert {r.status_code for r in responses} == {200}
        stats = (await client.get("/_fake/stats")).json()["keys"]["sk-many"]
        last = (await client.get("/_fake/last")).json()
        bad = await client.post("/_fake/faults", json={"mode": "explode"})
    assert (stats["requests"], stats["max_in_flight"], stats["in_flight"]) == (5, 5, 0)
    assert (stats["prompt_tokens"], stats["completion_tokens"]) == (10, 15)
    assert len(stats["arrivals"]) == 5 and stats["requests_last_60s"] == 5
    assert last["headers"]["authorization"] == "Bearer ****many"
    assert last["body"]["messages"][0]["content"] == "one two"
    assert bad.status_code == 400
