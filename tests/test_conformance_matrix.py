"""Issue #3's conformance matrix: every client protocol × every upstream kind × every scenario.

Each client protocol has one small driver that speaks it through its official SDK (`openai`, `anthropic`,
`google-genai`, `ollama`) and returns a normalized `Result`; the fake upstream's scripted replies make the
expected content, tool calls, usage and stop reason the same for every upstream kind. Usage is normalized
to "all prompt tokens" / "all generated tokens" (Anthropic reports cache reads apart, Gemini reports
thoughts apart). Cases whose adapters are not registered yet are skipped, naming the missing adapter.
"""

import base64
import time
from dataclasses import dataclass, field

import anthropic
import ollama
import openai
import orjson
import pytest
from django.core.management import call_command
from django.test import override_settings
from google import genai
from google.genai import types as gtypes

from proxy.adapters import CLIENT_PROTOCOLS, UPSTREAMS
from tests.conftest import make_setup
from tests.media import TINY_PNG_B64

# Each case runs inside a rolled-back transaction; the routes it uses are committed once per module.
pytestmark = pytest.mark.django_db

PNG_DATA_URL = f"data:image/png;base64,{TINY_PNG_B64}"
TOOL_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
               "required": ["city"]}
PARIS = ("get_weather", {"city": "Paris", "unit": "celsius"})
TOKYO = ("get_weather", {"city": "Tokyo", "unit": "celsius"})


@dataclass
class Result:
    text: str = ""
    reasoning: str = ""
    tools: list = field(default_factory=list)  # [(name, arguments dict)]
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None  # None: the pair cannot carry it, not compared
    stop: str | None = None  # "stop" or "tool", translated by the driver's STOP table before comparing
    error: tuple[int, str] | None = None  # (HTTP status, message) the client's SDK raised


@dataclass(frozen=True)
class Scenario:
    script: str  # the fake upstream's scripted model name (see tests/fakes/upstream.py)
    prompt: str
    stream: bool = False
    tool: bool = False
    image: bool = False
    reasoning: bool = False
    expected: Result = field(default_factory=Result)


SCENARIOS = {
    "plain": Scenario("model", "hello there gateway",
                      expected=Result("echo: hello there gateway", input_tokens=3, output_tokens=4, stop="stop")),
    "streamed": Scenario("model", "one two three", stream=True,
                         expected=Result("echo: one two three", input_tokens=3, output_tokens=4, stop="stop")),
    "tool_call": Scenario("tool", "weather in Paris?", tool=True,
                          expected=Result(tools=[PARIS], input_tokens=3, output_tokens=10, stop="tool")),
    "streamed_tool_call": Scenario("parallel", "weather in Paris?", stream=True, tool=True,
                                   expected=Result(tools=[PARIS, TOKYO], input_tokens=3, output_tokens=20,
                                                   stop="tool")),
    "image_input": Scenario("model", "describe this", image=True,
                            expected=Result("echo: describe this [images: 1]", input_tokens=12, output_tokens=5,
                                            stop="stop")),
    "reasoning": Scenario("reason", "why is the sky blue", reasoning=True,
                          expected=Result("echo: why is the sky blue", "thinking about: why is the sky blue",
                                          input_tokens=5, output_tokens=13, reasoning_tokens=7, stop="stop")),
    "upstream_error": Scenario("model", "hello",
                               expected=Result(error=(400, "context too long"))),
}


def _args(raw) -> dict:
    return orjson.loads(raw) if isinstance(raw, str | bytes) else dict(raw or {})


class Driver:
    """One client protocol, spoken through its official SDK. Subclasses implement `send`."""

    protocols: tuple[str, ...] = ()  # registry names that provide this client protocol
    module: str = ""  # where the adapter lives, for skip reasons
    STOP = {"stop": "stop", "tool": "tool"}
    carries_reasoning_tokens = True
    errors: tuple[type[Exception], ...] = ()

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def run(self, model: str, case: Scenario) -> Result:
        try:
            return self.send(model, case)
        except self.errors as exc:
            return Result(error=self.error_of(exc))

    def send(self, model: str, case: Scenario) -> Result:
        raise NotImplementedError

    def error_of(self, exc: Exception) -> tuple[int, str]:
        raise NotImplementedError


class OpenAIChatDriver(Driver):
    protocols = ("openai_chat",)
    module = "proxy/adapters/openai_chat.py"
    STOP = {"stop": "stop", "tool": "tool_calls"}
    errors = (openai.APIStatusError,)

    def send(self, model: str, case: Scenario) -> Result:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key=self.token, max_retries=0)
        content: list | str = case.prompt
        if case.image:
            content = [{"type": "text", "text": case.prompt}, {"type": "image_url", "image_url": {"url": PNG_DATA_URL}}]
        kwargs: dict = {"model": model, "messages": [{"role": "user", "content": content}]}
        if case.tool:
            kwargs["tools"] = [{"type": "function", "function": {"name": "get_weather", "parameters": TOOL_SCHEMA}}]
        if case.reasoning:
            kwargs["reasoning_effort"] = "low"
        if not case.stream:
            reply = client.chat.completions.create(**kwargs)
            message, usage = reply.choices[0].message, reply.usage
            return Result(message.content or "", getattr(message, "reasoning_content", None) or "",
                          [(c.function.name, _args(c.function.arguments)) for c in message.tool_calls or []],
                          usage.prompt_tokens, usage.completion_tokens,
                          usage.completion_tokens_details.reasoning_tokens, reply.choices[0].finish_reason)
        result, calls = Result(), {}
        for chunk in client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
            if chunk.usage:
                result.input_tokens, result.output_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                result.reasoning_tokens = chunk.usage.completion_tokens_details.reasoning_tokens
            for choice in chunk.choices:
                result.text += choice.delta.content or ""
                result.reasoning += getattr(choice.delta, "reasoning_content", None) or ""
                for call in choice.delta.tool_calls or []:
                    name, args = calls.get(call.index, ("", ""))
                    calls[call.index] = (name + (call.function.name or ""), args + (call.function.arguments or ""))
                result.stop = choice.finish_reason or result.stop
        result.tools = [(name, _args(args)) for _, (name, args) in sorted(calls.items())]
        return result

    def error_of(self, exc: openai.APIStatusError) -> tuple[int, str]:
        return exc.status_code, exc.message


class OpenAIResponsesDriver(Driver):
    protocols = ("openai_responses",)
    module = "proxy/adapters/openai_responses.py"
    STOP = {"stop": "completed", "tool": "completed"}
    errors = (openai.APIStatusError,)

    def send(self, model: str, case: Scenario) -> Result:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key=self.token, max_retries=0)
        content: list = [{"type": "input_text", "text": case.prompt}]
        if case.image:
            content.append({"type": "input_image", "image_url": PNG_DATA_URL})
        kwargs: dict = {"model": model, "input": [{"role": "user", "content": content}]}
        if case.tool:
            kwargs["tools"] = [{"type": "function", "name": "get_weather", "parameters": TOOL_SCHEMA, "strict": False}]
        if case.reasoning:
            kwargs["reasoning"] = {"effort": "low", "summary": "auto"}
        if case.stream:
            events = list(client.responses.create(**kwargs, stream=True))
            final = events[-1].response
            streamed_args = {}
            for event in events:
                if event.type == "response.function_call_arguments.delta":
                    streamed_args[event.output_index] = streamed_args.get(event.output_index, "") + event.delta
            # the deltas alone must rebuild what the final response says
            assert [streamed_args[i] for i, o in enumerate(final.output) if o.type == "function_call"] == [
                o.arguments for o in final.output if o.type == "function_call"]
        else:
            final = client.responses.create(**kwargs)
        reasoning = "".join(s.text for o in final.output if o.type == "reasoning" for s in o.summary)
        usage = final.usage
        return Result(final.output_text, reasoning,
                      [(o.name, _args(o.arguments)) for o in final.output if o.type == "function_call"],
                      usage.input_tokens, usage.output_tokens, usage.output_tokens_details.reasoning_tokens,
                      final.status)

    def error_of(self, exc: openai.APIStatusError) -> tuple[int, str]:
        return exc.status_code, exc.message


class AnthropicDriver(Driver):
    protocols = ("anthropic", "anthropic_messages")
    module = "proxy/adapters/anthropic.py"
    STOP = {"stop": "end_turn", "tool": "tool_use"}
    carries_reasoning_tokens = False  # Anthropic's usage has no reasoning count
    errors = (anthropic.APIStatusError,)

    def send(self, model: str, case: Scenario) -> Result:
        client = anthropic.Anthropic(base_url=self.url, api_key=self.token, max_retries=0)
        content: list = [{"type": "text", "text": case.prompt}]
        if case.image:
            content.append({"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                        "data": TINY_PNG_B64}})
        kwargs: dict = {"model": model, "max_tokens": 2048, "messages": [{"role": "user", "content": content}]}
        if case.tool:
            kwargs["tools"] = [{"name": "get_weather", "input_schema": TOOL_SCHEMA}]
        if case.reasoning:
            kwargs["thinking"] = {"type": "enabled", "budget_tokens": 1024}
        if case.stream:
            with client.messages.stream(**kwargs) as stream:
                for _ in stream:
                    pass
                message = stream.get_final_message()
        else:
            message = client.messages.create(**kwargs)
        usage = message.usage
        return Result("".join(b.text for b in message.content if b.type == "text"),
                      "".join(b.thinking for b in message.content if b.type == "thinking"),
                      [(b.name, _args(b.input)) for b in message.content if b.type == "tool_use"],
                      usage.input_tokens + (usage.cache_read_input_tokens or 0)
                      + (usage.cache_creation_input_tokens or 0),
                      usage.output_tokens, None, message.stop_reason)

    def error_of(self, exc: anthropic.APIStatusError) -> tuple[int, str]:
        return exc.status_code, exc.message


class GeminiDriver(Driver):
    protocols = ("gemini", "gemini_generate")
    module = "proxy/adapters/gemini.py"
    STOP = {"stop": "STOP", "tool": "STOP"}
    errors = (genai.errors.APIError,)

    def send(self, model: str, case: Scenario) -> Result:
        client = genai.Client(api_key=self.token, http_options=gtypes.HttpOptions(base_url=self.url))
        parts = [gtypes.Part.from_text(text=case.prompt)]
        if case.image:
            parts.append(gtypes.Part.from_bytes(data=base64.b64decode(TINY_PNG_B64), mime_type="image/png"))
        config = gtypes.GenerateContentConfig(
            automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True))
        if case.tool:
            config.tools = [gtypes.Tool(function_declarations=[
                gtypes.FunctionDeclaration(name="get_weather", parameters_json_schema=TOOL_SCHEMA)])]
        if case.reasoning:
            config.thinking_config = gtypes.ThinkingConfig(include_thoughts=True, thinking_budget=1024)
        contents = [gtypes.Content(role="user", parts=parts)]
        if case.stream:
            chunks = list(client.models.generate_content_stream(model=model, contents=contents, config=config))
        else:
            chunks = [client.models.generate_content(model=model, contents=contents, config=config)]
        result = Result()
        for chunk in chunks:
            for candidate in chunk.candidates or []:
                for part in (candidate.content.parts if candidate.content else None) or []:
                    if part.function_call:
                        result.tools.append((part.function_call.name, _args(part.function_call.args)))
                    elif part.thought:
                        result.reasoning += part.text or ""
                    else:
                        result.text += part.text or ""
                result.stop = candidate.finish_reason.value if candidate.finish_reason else result.stop
            if chunk.usage_metadata and chunk.usage_metadata.candidates_token_count is not None:
                usage = chunk.usage_metadata
                result.input_tokens = usage.prompt_token_count
                result.reasoning_tokens = usage.thoughts_token_count or 0
                result.output_tokens = (usage.candidates_token_count or 0) + result.reasoning_tokens
        return result

    def error_of(self, exc: genai.errors.APIError) -> tuple[int, str]:
        return exc.code, exc.message or ""


class OllamaDriver(Driver):
    protocols = ("ollama_chat",)
    module = "proxy/adapters/ollama.py"
    STOP = {"stop": "stop", "tool": "stop"}  # Ollama has no tool-call done_reason
    carries_reasoning_tokens = False
    errors = (ollama.ResponseError,)

    def send(self, model: str, case: Scenario) -> Result:
        client = ollama.Client(host=self.url, headers={"Authorization": "Bearer " + self.token})
        message: dict = {"role": "user", "content": case.prompt}
        if case.image:
            message["images"] = [TINY_PNG_B64]
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": TOOL_SCHEMA}}]
        replies = client.chat(model=model, messages=[message], tools=tools if case.tool else None,
                              think=True if case.reasoning else None, stream=case.stream)
        replies = list(replies) if case.stream else [replies]
        final = replies[-1]
        return Result("".join(r.message.content or "" for r in replies),
                      "".join(r.message.thinking or "" for r in replies),
                      [(c.function.name, _args(c.function.arguments)) for r in replies for c in r.message.tool_calls or []],
                      final.prompt_eval_count, final.eval_count, None, final.done_reason)

    def error_of(self, exc: ollama.ResponseError) -> tuple[int, str]:
        return exc.status_code, str(exc.error)


DRIVERS: dict[str, type[Driver]] = {
    "openai_chat": OpenAIChatDriver,
    "openai_responses": OpenAIResponsesDriver,
    "anthropic_messages": AnthropicDriver,
    "gemini_generate": GeminiDriver,
    "ollama_chat": OllamaDriver,
}
UPSTREAM_KINDS = ("openai", "anthropic", "gemini")


def _case(client: str, kind: str, scenario: str):
    marks = []
    driver = DRIVERS[client]
    if not any(name in CLIENT_PROTOCOLS for name in driver.protocols):
        marks.append(pytest.mark.skip(reason=f"the {client} client adapter ({driver.module}) is not merged yet"))
    elif kind not in UPSTREAMS:
        marks.append(pytest.mark.skip(reason=f"the {kind} upstream adapter is not merged yet (UPSTREAMS[{kind!r}])"))
    return pytest.param(client, kind, scenario, marks=marks, id=f"{client}-{kind}-{scenario}")


CASES = [_case(c, k, s) for c in DRIVERS for k in UPSTREAM_KINDS for s in SCENARIOS]


def _expected(case: Scenario, driver: type[Driver], kind: str) -> Result:
    want = Result(**vars(case.expected))
    want.tools = list(want.tools)
    if want.stop is not None:
        want.stop = driver.STOP[want.stop]
    # Reasoning tokens are compared only where both ends have a field for them.
    if want.error is None:
        carried = driver.carries_reasoning_tokens and kind != "anthropic"
        want.reasoning_tokens = (want.reasoning_tokens or 0) if carried else None
    return want


@dataclass
class Matrix:
    token: str
    requests: int = 0  # gateway requests made, each one usage row


@pytest.fixture(scope="module")
def matrix(django_db_setup, django_db_blocker, _gateway_server, fake_upstream):
    """One route per upstream kind and scripted model, created once for the whole matrix (a database flush
    per case would cost more than the case), and flushed when the module is done."""
    from proxy.models import UsageRecord

    scripts = sorted({case.script for case in SCENARIOS.values()})
    with django_db_blocker.unblock(), override_settings(DS2API_ALLOW_PRIVATE_UPSTREAMS=True):
        tokens = [make_setup(fake_upstream.url, kind=kind, model=f"matrix-{kind}-{script}",
                             upstream_model=f"fake-{script}").token
                  for kind in UPSTREAM_KINDS for script in scripts]
    _gateway_server.proxy_app.runtime.config._generation = -2  # reload the snapshot on the next request
    state = Matrix(tokens[0])  # every token belongs to the same team
    yield state
    with django_db_blocker.unblock():
        # Usage rows are written in batches after the replies: let the last ones land before the flush,
        # so none of them turns up in a later test's database.
        deadline = time.monotonic() + 10
        while UsageRecord.objects.count() < state.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        call_command("flush", interactive=False, verbosity=0)


@pytest.mark.parametrize(("client", "kind", "scenario"), CASES)
def test_conformance(client, kind, scenario, fake, _gateway_server, matrix):
    case = SCENARIOS[scenario]
    model = f"matrix-{kind}-{case.script}"
    if scenario == "upstream_error":
        fake.state.add_fault("*", "status", status=400, message="context too long")
    matrix.requests += 1
    got = DRIVERS[client](_gateway_server.url, matrix.token).run(model, case)
    want = _expected(case, DRIVERS[client], kind)
    if want.error is not None:
        assert got.error is not None and got.error[0] == want.error[0], got
        assert want.error[1] in got.error[1]
        return
    if want.reasoning_tokens is None:
        got.reasoning_tokens = None
    assert got == want
