"""OpenAI Responses (`POST /v1/responses`, stored responses) through the gateway, driven by the openai SDK."""

import httpx
import openai
import pytest

from accounts import services as account_services
from tests.conftest import make_setup
from tests.media import TINY_PNG_B64
from tests.usage_rows import settle_usage, usage_row_of

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def sdk(gateway, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)


@pytest.fixture
def routes(fake, gateway):
    """One token; routes `gpt-test`, `gpt-tool`, `gpt-parallel` and `gpt-reason` to the fake's OpenAI API."""
    setup = make_setup(fake.url)
    for name in ("gpt-tool", "gpt-parallel", "gpt-reason"):
        make_setup(fake.url, model=name)
    yield setup
    settle_usage(gateway.proxy_app)


def upstream_body(fake) -> dict:
    return fake.state.last_request()["body"]


def test_plain_response_object(routes, gateway, fake):
    reply = sdk(gateway, routes.token).responses.create(
        model="gpt-test", input="hello there gateway", instructions="be brief", temperature=0.5
    )
    assert reply.object == "response" and reply.id.startswith("resp_") and reply.status == "completed"
    assert reply.output_text == "echo: hello there gateway"
    assert reply.model == "gpt-test" and reply.temperature == 0.5 and reply.instructions == "be brief"
    message = reply.output[0]
    assert (message.type, message.role, message.status) == ("message", "assistant", "completed")
    usage = reply.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (5, 4, 9)
    assert usage.input_tokens_details.cached_tokens == 0 and usage.output_tokens_details.reasoning_tokens == 0
    sent = upstream_body(fake)
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["temperature"] == 0.5
    row = usage_row_of(routes.team.id)
    assert (row.client_protocol, row.input_tokens, row.output_tokens, row.streamed) == ("openai_responses", 5, 4, False)


def test_streamed_event_sequence(routes, gateway):
    events = list(sdk(gateway, routes.token).responses.create(model="gpt-test", input="one two", stream=True))
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: one two"
    final = events[-1].response
    assert final.status == "completed" and final.output_text == "echo: one two"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2, 3)
    assert events[0].response.id == final.id and events[0].response.status == "in_progress"


def test_stream_helper_accumulates_the_final_response(routes, gateway):
    with sdk(gateway, routes.token).responses.stream(model="gpt-reason", input="why is the sky blue") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == "echo: why is the sky blue"
    reasoning = final.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "thinking about: why is the sky blue"
    assert final.usage.output_tokens_details.reasoning_tokens == 7 and final.usage.output_tokens == 13
    assert kinds[2:5] == ["response.output_item.added", "response.reasoning_summary_part.added",
                          "response.reasoning_summary_text.delta"]
    assert "response.reasoning_summary_text.done" in kinds and "response.reasoning_summary_part.done" in kinds


def test_tool_call_and_result_round_trip(routes, gateway, fake):
    client = sdk(gateway, routes.token)
    first = client.responses.create(model="gpt-tool", input="weather in Paris?", tools=[WEATHER_TOOL],
                                    tool_choice="required")
    (call,) = first.output
    assert (call.type, call.name, call.call_id) == ("function_call", "get_weather", "call_fake_1")
    assert call.arguments == '{"city": "Paris", "unit": "celsius"}' and first.status == "completed"
    assert first.usage.output_tokens == 10
    assert upstream_body(fake)["tool_choice"] == "required"
    second = client.responses.create(
        model="gpt-tool",
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny and mild"},
        ],
    )
    assert second.output_text == "echo: sunny and mild"
    messages = upstream_body(fake)["messages"]
    assert messages[1]["tool_calls"][0]["id"] == "call_fake_1"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_fake_1", "content": "sunny and mild"}


def test_streamed_parallel_tool_calls(routes, gateway):
    events = list(sdk(gateway, routes.token).responses.create(
        model="gpt-parallel", input="weather?", tools=[WEATHER_TOOL], stream=True))
    added = [e.item for e in events if e.type == "response.output_item.added"]
    assert [(i.type, i.call_id) for i in added] == [("function_call", "call_fake_1"), ("function_call", "call_fake_2")]
    for index, city in ((0, "Paris"), (1, "Tokyo")):
        deltas = "".join(e.delta for e in events
                         if e.type == "response.function_call_arguments.delta" and e.output_index == index)
        assert deltas == f'{{"city": "{city}", "unit": "celsius"}}'
        done = [e for e in events if e.type == "response.function_call_arguments.done" and e.output_index == index]
        assert done[0].arguments == deltas
    final = events[-1].response
    assert [o.arguments for o in final.output] == [
        '{"city": "Paris", "unit": "celsius"}', '{"city": "Tokyo", "unit": "celsius"}']
    assert final.usage.output_tokens == 20


def test_image_input_and_options(routes, gateway, fake):
    reply = sdk(gateway, routes.token).responses.create(
        model="gpt-test",
        input=[{"role": "user", "content": [
            {"type": "input_text", "text": "describe this"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{TINY_PNG_B64}", "detail": "low"},
        ]}],
        text={"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
        reasoning={"effort": "low"},
        top_p=0.9,
        parallel_tool_calls=False,
    )
    assert reply.output_text == "echo: describe this [images: 1]"
    assert reply.usage.input_tokens == 12
    sent = upstream_body(fake)
    image = sent["messages"][0]["content"][1]
    assert image == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{TINY_PNG_B64}", "detail": "low"}}
    assert sent["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True}}
    assert (sent["reasoning_effort"], sent["top_p"], sent["parallel_tool_calls"]) == ("low", 0.9, False)


def test_max_output_tokens_gives_incomplete(routes, gateway, fake):
    client = sdk(gateway, routes.token)
    reply = client.responses.create(model="gpt-test", input="a b c d e", max_output_tokens=2)
    assert reply.status == "incomplete" and reply.incomplete_details.reason == "max_output_tokens"
    assert reply.output_text == "echo: a" and upstream_body(fake)["max_completion_tokens"] == 2
    events = list(client.responses.create(model="gpt-test", input="a b c d e", max_output_tokens=2, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "hi", "previous_response_id": "resp_123"}, "previous_response_id"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0].type"),
    ({"input": "hi", "temperature": 3}, "temperature"),
    ({"input": []}, "input"),
])
def test_unsupported_or_invalid_fields_are_400_naming_the_field(routes, gateway, body, param):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gateway, routes.token).post("/responses", cast_to=object, body={"model": "gpt-test", **body})
    assert info.value.body["param"] == param and info.value.body["type"] == "invalid_request_error"


def test_upstream_error_keeps_status_and_message(routes, gateway, fake):
    fake.state.add_fault("*", "status", status=400, message="context too long")
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gateway, routes.token).responses.create(model="gpt-test", input="hi")
    assert "context too long" in info.value.message


def test_stream_cut_midway_ends_with_failed_event(routes, gateway, fake):
    fake.state.add_fault("*", "cut", after=3)
    events = list(sdk(gateway, routes.token).responses.create(model="gpt-test", input="a b c d e f", stream=True))
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "server_error"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_missing_token_is_openai_401(routes, gateway):
    response = httpx.post(gateway.url + "/v1/responses", json={"model": "gpt-test", "input": "hi"})
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"


# --- stored responses ------------------------------------------------------------------------------


def test_stored_response_can_be_retrieved_and_deleted_by_its_team_only(routes, gateway, fake):
    client = sdk(gateway, routes.token)
    created = client.responses.create(model="gpt-test", input="remember me", store=True)
    assert created.store is True
    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == "echo: remember me"
    outsider_team = account_services.create_team("outsiders")
    outsider = account_services.issue_token(outsider_team, "other").plaintext
    with pytest.raises(openai.NotFoundError):
        sdk(gateway, outsider).responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk(gateway, outsider).responses.delete(created.id)
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_streamed_response_is_stored_and_unstored_is_not(routes, gateway):
    client = sdk(gateway, routes.token)
    events = list(client.responses.create(model="gpt-test", input="streamed", store=True, stream=True))
    stored_id = events[-1].response.id
    assert client.responses.retrieve(stored_id).output_text == "echo: streamed"
    plain = client.responses.create(model="gpt-test", input="not kept")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(plain.id)


def test_reasoning_signature_round_trips_to_an_anthropic_upstream(routes, gateway, fake):
    """Anthropic needs its signed thinking block back with the tool result: it travels in encrypted_content."""
    make_setup(fake.url, kind="anthropic", model="claude-tool-reason")
    client = sdk(gateway, routes.token)
    first = client.responses.create(model="claude-tool-reason", input="weather in Paris?", tools=[WEATHER_TOOL])
    reasoning, call = first.output
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    assert reasoning.summary[0].text == "thinking about: weather in Paris?"
    client.responses.create(model="claude-tool-reason", tools=[WEATHER_TOOL], input=[
        {"role": "user", "content": "weather in Paris?"},
        reasoning.model_dump(exclude_none=True),
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ])
    assistant = upstream_body(fake)["messages"][1]
    assert [block["type"] for block in assistant["content"]] == ["thinking", "tool_use"]
    assert assistant["content"][0]["signature"] == reasoning.encrypted_content
    assert assistant["content"][1]["id"] == call.call_id
