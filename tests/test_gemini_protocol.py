"""Gemini generateContent in front of every upstream kind, driven by the official `google-genai` SDK.

What a Gemini client sees (parts, finish reasons, usageMetadata, Google error statuses, SSE and JSON-array
streams) and what each provider is sent; plus countTokens, embeddings (Gemini and OpenAI clients) and the
model list. The conformance matrix covers the common scenarios; these cases go into Gemini's own semantics.
"""

import base64

import httpx
import openai
import orjson
import pytest
from google import genai
from google.genai import types

from tests.conftest import make_setup, wait_for_usage_rows
from tests.media import TINY_PNG_B64

KINDS = ("openai", "anthropic", "gemini")
WEATHER = types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="Current weather",
    parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                            "required": ["city"]})])
PARIS = {"city": "Paris", "unit": "celsius"}


@pytest.fixture
def gemini(gateway):
    """Makes google-genai clients on the gateway, kept for the whole test: a Client closes its HTTP pool when
    it is garbage-collected, even while a `client.models` taken from it is still in use."""
    clients: list[genai.Client] = []

    def make(token: str, version: str | None = None) -> genai.Client:
        options = types.HttpOptions(base_url=gateway.url, api_version=version) if version else types.HttpOptions(
            base_url=gateway.url)
        clients.append(genai.Client(api_key=token, http_options=options))
        return clients[-1]

    return make


def setup_for(fake, kind: str, script: str = "model", model: str = "gemini-test"):
    return make_setup(fake.url, kind=kind, model=model, upstream_model=f"fake-{script}")


def config(**fields) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True), **fields)


@pytest.mark.parametrize(("kind", "version"), [("openai", None), ("anthropic", None), ("gemini", None),
                                               ("openai", "v1beta"), ("anthropic", "v1beta")])
def test_plain_generate_content(kind, version, fake, gateway, gemini):
    setup = setup_for(fake, kind)
    response = gemini(setup.token, version).models.generate_content(
        model="gemini-test", contents="hello there gateway",
        config=config(system_instruction="be brief", max_output_tokens=256))
    assert response.text == "echo: hello there gateway"
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.candidates[0].content.role == "model" and response.model_version == "gemini-test"
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.total_token_count) == (5, 4, 9)
    sent = fake.state.last_request()["body"]
    if kind == "openai":
        assert sent["messages"][0] == {"role": "system", "content": "be brief"} and sent["max_tokens"] == 256
    elif kind == "anthropic":
        assert sent["system"] == "be brief" and sent["max_tokens"] == 256
    row = wait_for_usage_rows(1)[0]
    assert (row.client_protocol, row.upstream_kind, row.input_tokens, row.output_tokens) == ("gemini", kind, 5, 4)


@pytest.mark.parametrize("kind", KINDS)
def test_sse_stream_and_json_array_stream(kind, fake, gateway, gemini):
    setup = setup_for(fake, kind)
    chunks = list(gemini(setup.token).models.generate_content_stream(
        model="gemini-test", contents="one two three"))
    assert "".join(c.text or "" for c in chunks) == "echo: one two three"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.prompt_token_count == 3
    assert chunks[-1].usage_metadata.candidates_token_count == 4
    url = gateway.url + "/v1beta/models/gemini-test:streamGenerateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "one two three"}]}]}
    sse = httpx.post(url + "?alt=sse", json=body, headers={"x-goog-api-key": setup.token})
    assert sse.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in sse.content.split(b"\r\n\r\n") if f]
    assert all(f.startswith(b"data: {") for f in frames)
    array = httpx.post(url, json=body, params={"key": setup.token})
    assert array.headers["content-type"].startswith("application/json")
    items = orjson.loads(array.content)
    text = "".join(p.get("text", "") for item in items for p in item["candidates"][0]["content"]["parts"])
    assert text == "echo: one two three" and items[-1]["candidates"][0]["finishReason"] == "STOP"
    assert items[-1]["usageMetadata"]["totalTokenCount"] == 7


@pytest.mark.parametrize("kind", KINDS)
def test_function_call_and_response_round_trip(kind, fake, gateway, gemini):
    setup = setup_for(fake, kind, "tool")
    client = gemini(setup.token)
    tool_config = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
        mode="ANY", allowed_function_names=["get_weather"]))
    first = client.models.generate_content(model="gemini-test", contents="weather in Paris?",
                                           config=config(tools=[WEATHER], tool_config=tool_config))
    call = first.function_calls[0]
    assert (call.name, call.args) == ("get_weather", PARIS)
    assert first.candidates[0].finish_reason == types.FinishReason.STOP
    sent = fake.state.last_request()["body"]
    if kind == "openai":
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    elif kind == "anthropic":
        assert sent["tool_choice"] == {"type": "tool", "name": "get_weather"}
    contents = [types.Content(role="user", parts=[types.Part.from_text(text="weather in Paris?")]),
                first.candidates[0].content,
                types.Content(role="user", parts=[types.Part.from_function_response(
                    name="get_weather", response={"result": "sunny"})])]
    second = client.models.generate_content(model="gemini-test", contents=contents, config=config(tools=[WEATHER]))
    sent = fake.state.last_request()["body"]
    if kind == "gemini":
        assert second.text == "echo: sunny"
    elif kind == "openai":  # the tool message carries the response object as JSON, under the call's id
        assert second.text == 'echo: {"result":"sunny"}'
        assert sent["messages"][-1]["tool_call_id"] == sent["messages"][-2]["tool_calls"][0]["id"]
    else:
        assert second.text == 'echo: {"result":"sunny"}'
        use, result = sent["messages"][-2]["content"][0], sent["messages"][-1]["content"][0]
        assert use["type"] == "tool_use" and result["tool_use_id"] == use["id"]


@pytest.mark.parametrize("kind", KINDS)
def test_streamed_parallel_function_calls_survive_byte_chunking(kind, fake, gateway, gemini):
    setup = setup_for(fake, kind, "parallel")
    fake.state.configure(byte_chunk=1)
    chunks = list(gemini(setup.token).models.generate_content_stream(
        model="gemini-test", contents="weather in Paris and Tokyo?", config=config(tools=[WEATHER])))
    calls = [(c.name, c.args) for chunk in chunks for c in chunk.function_calls or []]
    assert calls == [("get_weather", PARIS), ("get_weather", {"city": "Tokyo", "unit": "celsius"})]
    assert chunks[-1].usage_metadata.candidates_token_count == 20


@pytest.mark.parametrize("kind", KINDS)
def test_inline_and_uri_images(kind, fake, gateway, gemini):
    setup = setup_for(fake, kind)
    parts = [types.Part.from_text(text="compare these"),
             types.Part.from_bytes(data=base64.b64decode(TINY_PNG_B64), mime_type="image/png"),
             types.Part.from_uri(file_uri="https://example.com/cat.png", mime_type="image/png")]
    response = gemini(setup.token).models.generate_content(
        model="gemini-test", contents=[types.Content(role="user", parts=parts)])
    assert response.text == "echo: compare these [images: 2]"
    sent = fake.state.last_request()["body"]
    if kind == "openai":
        urls = [p["image_url"]["url"] for p in sent["messages"][0]["content"] if p["type"] == "image_url"]
        assert urls == [f"data:image/png;base64,{TINY_PNG_B64}", "https://example.com/cat.png"]
    elif kind == "anthropic":
        sources = [b["source"] for b in sent["messages"][0]["content"] if b["type"] == "image"]
        assert sources == [{"type": "base64", "media_type": "image/png", "data": TINY_PNG_B64},
                           {"type": "url", "url": "https://example.com/cat.png"}]


@pytest.mark.parametrize("kind", KINDS)
def test_thoughts_only_when_include_thoughts(kind, fake, gateway, gemini):
    setup = setup_for(fake, kind, "reason")
    client = gemini(setup.token)
    thinking = types.ThinkingConfig(include_thoughts=True, thinking_budget=2048)
    response = client.models.generate_content(model="gemini-test", contents="why is the sky blue",
                                              config=config(thinking_config=thinking))
    parts = response.candidates[0].content.parts
    assert [(p.thought, p.text) for p in parts if p.thought] == [(True, "thinking about: why is the sky blue")]
    assert response.text == "echo: why is the sky blue"
    if kind != "anthropic":  # Anthropic does not count thinking tokens apart
        assert response.usage_metadata.thoughts_token_count == 7
    sent = fake.state.last_request()["body"]
    if kind == "anthropic":
        assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    elif kind == "openai":
        assert sent["reasoning_effort"] == "low"
    hidden = client.models.generate_content(model="gemini-test", contents="why is the sky blue",
                                            config=config(thinking_config=types.ThinkingConfig(thinking_budget=2048)))
    assert not any(p.thought for p in hidden.candidates[0].content.parts)


@pytest.mark.parametrize("kind", KINDS)
def test_json_mode_and_schema(kind, fake, gateway, gemini):
    setup = setup_for(fake, kind)
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    gemini(setup.token).models.generate_content(
        model="gemini-test", contents="answer in json",
        config=config(response_mime_type="application/json", response_json_schema=schema))
    sent = fake.state.last_request()["body"]
    if kind == "openai":
        assert sent["response_format"] == {"type": "json_schema",
                                           "json_schema": {"name": "response", "schema": schema}}
    elif kind == "anthropic":
        assert sent["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    else:
        assert sent["generationConfig"]["responseJsonSchema"] == schema


@pytest.mark.parametrize(("kind", "status", "status_name"), [
    ("openai", 400, "INVALID_ARGUMENT"), ("anthropic", 400, "INVALID_ARGUMENT"), ("gemini", 400, "INVALID_ARGUMENT"),
    ("anthropic", 429, "RESOURCE_EXHAUSTED"), ("gemini", 429, "RESOURCE_EXHAUSTED"),
    ("openai", 503, "UNAVAILABLE"), ("anthropic", 529, "UNAVAILABLE"),
])
def test_upstream_errors_in_google_shape(kind, status, status_name, fake, gateway, gemini):
    setup = setup_for(fake, kind)
    fake.state.add_fault("*", "status", status=status, message="upstream says no", retry_after=7)
    with pytest.raises(genai.errors.APIError) as info:
        gemini(setup.token).models.generate_content(model="gemini-test", contents="hi")
    assert (info.value.code, info.value.status, info.value.message) == (status, status_name, "upstream says no")
    if status == 429:
        assert info.value.details["error"]["details"] == [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]


def test_request_errors_in_google_shape(fake, gateway, gemini):
    setup = setup_for(fake, "openai")
    with pytest.raises(genai.errors.ClientError) as info:
        gemini("ds2-not-a-real-token-000000000000").models.generate_content(model="gemini-test", contents="hi")
    assert (info.value.code, info.value.status) == (401, "UNAUTHENTICATED")
    with pytest.raises(genai.errors.ClientError) as info:
        gemini(setup.token).models.generate_content(model="no-such-model", contents="hi")
    assert (info.value.code, info.value.status) == (404, "NOT_FOUND")
    search = types.Tool(google_search=types.GoogleSearch())
    with pytest.raises(genai.errors.ClientError) as info:
        gemini(setup.token).models.generate_content(model="gemini-test", contents="hi",
                                                          config=config(tools=[search]))
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    assert info.value.message.startswith("tools[0].googleSearch")
    bad = httpx.post(gateway.url + "/v1beta/models/gemini-test:generateContent", content=b"{nope",
                     headers={"x-goog-api-key": setup.token})
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize("kind", KINDS)
def test_stream_failing_midway_ends_with_an_error_chunk(kind, fake, gateway, gemini):
    setup = setup_for(fake, kind, "long")
    fake.state.add_fault("*", "cut", after=6)
    seen = []
    with pytest.raises(genai.errors.APIError) as info:
        for chunk in gemini(setup.token).models.generate_content_stream(model="gemini-test", contents="go"):
            seen.append(chunk.text)
    assert seen and info.value.code == 502
    fake.state.add_fault("*", "cut", after=6)
    array = httpx.post(gateway.url + "/v1beta/models/gemini-test:streamGenerateContent",
                       json={"contents": [{"parts": [{"text": "go"}]}]}, headers={"x-goog-api-key": setup.token})
    items = orjson.loads(array.content)  # still one well-formed JSON array
    assert "error" in items[-1] and "candidates" in items[0]


@pytest.mark.parametrize(("kind", "exact"), [("gemini", True), ("anthropic", True), ("openai", False)])
def test_count_tokens(kind, exact, fake, gateway, gemini):
    setup = setup_for(fake, kind)
    counted = gemini(setup.token).models.count_tokens(model="gemini-test", contents="one two three four")
    if exact:
        assert counted.total_tokens == 4
        assert fake.state.last_request()["path"].endswith((":countTokens", "/count_tokens"))
    else:
        assert counted.total_tokens > 0
        raw = httpx.post(gateway.url + "/v1beta/models/gemini-test:countTokens",
                         json={"contents": [{"parts": [{"text": "one two"}]}]}, headers={"x-goog-api-key": setup.token})
        assert raw.json()["estimated"] is True and raw.headers["x-ds2-usage"] == "estimated"


@pytest.mark.parametrize("kind", ("gemini", "openai"))
def test_gemini_embeddings(kind, fake, gateway, gemini):
    setup = setup_for(fake, kind, model="embed-test")
    client = gemini(setup.token)
    result = client.models.embed_content(model="embed-test", contents=["first text", "second text"],
                                         config=types.EmbedContentConfig(output_dimensionality=8))
    assert len(result.embeddings) == 2 and all(len(e.values) == 8 for e in result.embeddings)
    assert result.embeddings[0].values != result.embeddings[1].values
    single = httpx.post(gateway.url + "/v1beta/models/embed-test:embedContent", headers={"x-goog-api-key": setup.token},
                        json={"content": {"parts": [{"text": "first text"}]}, "outputDimensionality": 8})
    assert single.json()["embedding"]["values"] == pytest.approx(result.embeddings[0].values, abs=1e-5)
    sent = fake.state.last_request()
    if kind == "openai":
        assert sent["body"]["input"] == ["first text"] and sent["body"]["dimensions"] == 8


@pytest.mark.parametrize("kind", ("openai", "gemini"))
def test_openai_embeddings(kind, fake, gateway):
    setup = setup_for(fake, kind, model="embed-test")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=setup.token, max_retries=0)
    result = client.embeddings.create(model="embed-test", input=["first text", "second text"], dimensions=8)
    assert [d.index for d in result.data] == [0, 1] and all(len(d.embedding) == 8 for d in result.data)
    assert result.model == "embed-test" and result.usage.prompt_tokens > 0
    floats = client.embeddings.create(model="embed-test", input="first text", dimensions=8,
                                      encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-5)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")


def test_model_list_and_get_in_gemini_shape(fake, gateway, gemini):
    setup = setup_for(fake, "openai")
    for version in (None, "v1beta"):
        client = gemini(setup.token, version)
        assert [m.name for m in client.models.list()] == ["models/gemini-test"]
        model = client.models.get(model="gemini-test")
        assert model.name == "models/gemini-test" and "generateContent" in model.supported_actions
    with pytest.raises(genai.errors.ClientError) as info:
        gemini(setup.token).models.get(model="missing-model")
    assert info.value.status == "NOT_FOUND"
    openai_shape = httpx.get(gateway.url + "/v1/models", headers={"authorization": f"Bearer {setup.token}"})
    assert openai_shape.json()["data"][0]["id"] == "gemini-test"


def test_reasoning_signatures_reach_only_the_provider_that_made_them():
    from proxy.adapters.anthropic import AnthropicClient, parse_anthropic_request
    from proxy.adapters.anthropic_upstream import anthropic_body
    from proxy.adapters.base import InboundCall
    from proxy.adapters.gemini import GeminiClient
    from proxy.adapters.gemini_upstream import SKIP_SIGNATURE, GeminiUpstream, gemini_body

    answer = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": PARIS}, "thoughtSignature": "c2lnbmVk"}]},
        "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 10}}
    request = parse_anthropic_request({"model": "m", "max_tokens": 100, "thinking": {"type": "enabled",
                                       "budget_tokens": 1024}, "messages": [{"role": "user", "content": "hi"}]},
                                      need_max_tokens=True)
    response = GeminiUpstream().parse_response(orjson.dumps(answer), request)
    assert response.finish_reason == "tool_calls"
    content = AnthropicClient().render_response(response, request)["content"]
    assert content[0] == {"type": "thinking", "thinking": "", "signature": "gemini:c2lnbmVk"}
    call = content[1]
    history = parse_anthropic_request({"model": "m", "max_tokens": 100, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "sunny"}]}]},
        need_max_tokens=True)
    history.extra.clear()  # as if the conversation had come from another protocol
    to_gemini = gemini_body(history)["contents"]
    assert to_gemini[1]["parts"] == [{"functionCall": {"name": "get_weather", "args": PARIS},
                                      "thoughtSignature": "c2lnbmVk"}]
    assert to_gemini[2]["parts"][0]["functionResponse"]["name"] == "get_weather"
    to_anthropic = anthropic_body(history, "claude")["messages"][1]["content"]
    assert [block["type"] for block in to_anthropic] == ["tool_use"]  # Anthropic would reject Gemini's signature
    history.messages[1].parts = history.messages[1].parts[1:]  # a call no Gemini model signed
    assert gemini_body(history)["contents"][1]["parts"][0]["thoughtSignature"] == SKIP_SIGNATURE

    signed_by_anthropic = parse_anthropic_request({"model": "m", "max_tokens": 9, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "QW50aHJvcGlj"},
                                          {"type": "text", "text": "ok"}]}]}, need_max_tokens=True)
    gemini_request = GeminiClient().parse_request({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                                                   "generationConfig": {"thinkingConfig": {"includeThoughts": True}}},
                                                  InboundCall(path_model="m"))
    held = GeminiClient().render_response(
        type(response)("id", "m", signed_by_anthropic.messages[1].parts), gemini_request)["candidates"][0]
    parts = held["content"]["parts"]  # what a Gemini client keeps in its history...
    assert parts[0] == {"text": "hmm", "thought": True} and parts[1]["text"] == "ok"
    back = GeminiClient().parse_request({"contents": [{"role": "user", "parts": [{"text": "hi"}]},
                                                      {"role": "model", "parts": parts}]}, InboundCall(path_model="m"))
    back.extra.clear()
    thinking = anthropic_body(back, "claude")["messages"][1]["content"][0]
    assert thinking == {"type": "thinking", "thinking": "hmm", "signature": "QW50aHJvcGlj"}  # ...and returns


def test_media_the_chosen_provider_cannot_take_is_refused_naming_it(fake, gateway, gemini):
    setup = setup_for(fake, "anthropic")
    audio = types.Part.from_bytes(data=b"RIFF0000WAVE", mime_type="audio/wav")
    with pytest.raises(genai.errors.ClientError) as info:
        gemini(setup.token).models.generate_content(
            model="gemini-test", contents=[types.Content(role="user", parts=[types.Part.from_text(text="hi"), audio])])
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT") and "audio/wav" in info.value.message
    assert fake.state.last_request() is None  # refused before any provider was called
