"""Local models through the gateway, as users see them: official SDKs in, a model in this process out.

Uses the real SmolLM2-135M-Instruct (text) and a tiny random-weight Idefics3 model (images); both are
built once per machine by tests/local_fixtures.py. The tiny VLM never stops by itself, which makes the
queueing and cancellation tests deterministic.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from dataclasses import dataclass

import anthropic
import ollama
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from accounts import services as account_services
from accounts.models import Team
from proxy import local_models
from proxy.adapters import CLIENT_PROTOCOLS
from routing import services
from tests.servers import ServerThread
from tests.usage_rows import settle_usage

# Fixtures smollm2_dir, smollm2_tools_dir and tiny_vlm_dir; they skip the test, saying why, when the
# `local` extra or the SmolLM2 weights are not installed.
pytest_plugins = ["tests.local_fixtures"]
pytestmark = pytest.mark.local_models

PROMPT = "What is the capital of France?"
VLM_PROMPT = "What is in this image?"


@pytest.fixture(autouse=True)
def _free_models(gateway):
    yield
    settle_usage(gateway.proxy_app)  # this test's usage rows land before its database is emptied
    local_models.unload_all()  # each test's provider has a new id: do not keep its model around


def png(color=(200, 30, 30), size=(40, 30)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def local_setup(model_dir, model: str, **options) -> tuple[str, int]:
    provider = services.save_provider(f"local-{model}", kind="local", options={"model": str(model_dir), **options})
    services.save_route(model, [services.TargetSpec(provider)])
    team = Team.objects.filter(name="qa").first() or account_services.create_team("qa")
    return account_services.issue_token(team, f"token-{time.monotonic_ns()}").plaintext, provider.id


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def usage_rows(provider_id: int, count: int) -> list:
    """This test's usage rows (a previous test's late batch may still land in the table)."""
    from proxy.models import UsageRecord

    rows = UsageRecord.objects.filter(provider_id=provider_id).order_by("id")
    wait_until(lambda: rows.count() >= count, timeout=10)
    return list(rows)


def require_protocol(name: str) -> None:
    if name not in CLIENT_PROTOCOLS:
        pytest.skip(f"the {name!r} inbound adapter (proxy/adapters/{name}.py) is not registered in "
                    "proxy.adapters.CLIENT_PROTOCOLS yet")


# --- one driver per official SDK -----------------------------------------------------------------


@dataclass
class Answer:
    text: str
    input_tokens: int
    output_tokens: int


def ask_openai(url, token, model, *, stream, image=None, max_tokens=24) -> Answer:
    client = openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0)
    content: object = PROMPT
    if image is not None:
        content = [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": VLM_PROMPT}]
    kwargs = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
              "temperature": 0}
    if not stream:
        reply = client.chat.completions.create(**kwargs)
        return Answer(reply.choices[0].message.content, reply.usage.prompt_tokens, reply.usage.completion_tokens)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return Answer(text, chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens)


def ask_anthropic(url, token, model, *, stream, image=None, max_tokens=24) -> Answer:
    client = anthropic.Anthropic(base_url=url, api_key=token, max_retries=0)
    content: object = PROMPT
    if image is not None:
        content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                "data": base64.b64encode(image).decode()}},
                   {"type": "text", "text": VLM_PROMPT}]
    # This SDK no longer takes a temperature; the model's own defaults are greedy.
    kwargs = {"model": model, "max_tokens": max_tokens,
              "messages": [{"role": "user", "content": content}]}
    if stream:
        with client.messages.stream(**kwargs) as events:
            for _ in events:
                pass
            message = events.get_final_message()
    else:
        message = client.messages.create(**kwargs)
    text = "".join(block.text for block in message.content if block.type == "text")
    return Answer(text, message.usage.input_tokens, message.usage.output_tokens)


def ask_gemini(url, token, model, *, stream, image=None, max_tokens=24) -> Answer:
    client = genai.Client(api_key=token, http_options=gtypes.HttpOptions(base_url=url))
    parts = [gtypes.Part.from_text(text=PROMPT)]
    if image is not None:
        parts = [gtypes.Part.from_bytes(data=image, mime_type="image/png"), gtypes.Part.from_text(text=VLM_PROMPT)]
    kwargs = {"model": model, "contents": [gtypes.Content(role="user", parts=parts)],
              "config": gtypes.GenerateContentConfig(max_output_tokens=max_tokens, temperature=0)}
    chunks = list(client.models.generate_content_stream(**kwargs)) if stream else [
        client.models.generate_content(**kwargs)]
    text = "".join(chunk.text or "" for chunk in chunks)
    usage = next(c.usage_metadata for c in reversed(chunks) if c.usage_metadata)
    return Answer(text, usage.prompt_token_count, usage.candidates_token_count)


def ask_ollama(url, token, model, *, stream, image=None, max_tokens=24) -> Answer:
    client = ollama.Client(host=url, headers={"Authorization": "Bearer " + token})
    message: dict = {"role": "user", "content": PROMPT}
    if image is not None:
        message = {"role": "user", "content": VLM_PROMPT, "images": [base64.b64encode(image).decode()]}
    replies = client.chat(model=model, messages=[message], stream=stream,
                          options={"num_predict": max_tokens, "temperature": 0})
    replies = list(replies) if stream else [replies]
    text = "".join(reply.message.content or "" for reply in replies)
    return Answer(text, replies[-1].prompt_eval_count, replies[-1].eval_count)


SDKS = {"openai_chat": ask_openai, "anthropic": ask_anthropic, "gemini": ask_gemini, "ollama_chat": ask_ollama}
IMAGE_ARG = {
    "openai_chat": lambda data: "data:image/png;base64," + base64.b64encode(data).decode(),
    "anthropic": lambda data: data,
    "gemini": lambda data: data,
    "ollama_chat": lambda data: data,
}


def expected_prompt_tokens(model_dir, content) -> int:
    """The prompt length the model's own processor gives, counted independently of the gateway."""
    from transformers import AutoProcessor, AutoTokenizer

    if isinstance(content, str):
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        text = tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                             tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    from PIL import Image

    processor = AutoProcessor.from_pretrained(model_dir)
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    image = Image.open(io.BytesIO(png())).convert("RGB")
    return int(processor(text=text, images=[[image]], return_tensors="pt")["input_ids"].shape[-1])


# --- acceptance ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", list(SDKS))
def test_each_sdk_gets_paris_from_smollm2_plain_and_streamed(gateway, smollm2_dir, protocol):
    require_protocol(protocol)
    token, provider_id = local_setup(smollm2_dir, "local-smol")
    expected_input = expected_prompt_tokens(smollm2_dir, PROMPT)
    for stream in (False, True):
        answer = SDKS[protocol](gateway.url, token, "local-smol", stream=stream)
        assert "Paris" in answer.text, (stream, answer.text)
        assert answer.input_tokens == expected_input
        assert 0 < answer.output_tokens < 24
    rows = usage_rows(provider_id, 2)
    assert [(r.upstream_kind, r.status, r.streamed) for r in rows] == [("local", 200, False), ("local", 200, True)]
    assert [r.input_tokens for r in rows] == [expected_input] * 2 and not any(r.estimated for r in rows)
    assert rows[1].ttfb_ms is not None


@pytest.mark.parametrize("protocol", list(SDKS))
def test_an_image_request_reaches_the_vision_model_with_exact_usage(gateway, tiny_vlm_dir, protocol):
    require_protocol(protocol)
    token, provider_id = local_setup(tiny_vlm_dir, "local-vlm")
    expected_input = expected_prompt_tokens(tiny_vlm_dir, [{"type": "image"}, {"type": "text", "text": VLM_PROMPT}])
    for stream in (False, True):
        answer = SDKS[protocol](gateway.url, token, "local-vlm", stream=stream, image=IMAGE_ARG[protocol](png()),
                                max_tokens=5)
        assert answer.text.strip()
        # The tiny model never ends by itself: exactly max_tokens come out; the prompt holds the image tokens.
        assert (answer.input_tokens, answer.output_tokens) == (expected_input, 5)
    assert local_models.status(provider_id)["vision"] is True


def test_image_urls_are_fetched_for_the_vision_model(gateway, tiny_vlm_dir):
    async def image_server(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"image/png")]})
        await send({"type": "http.response.body", "body": png()})

    token, _ = local_setup(tiny_vlm_dir, "local-vlm")
    expected_input = expected_prompt_tokens(tiny_vlm_dir, [{"type": "image"}, {"type": "text", "text": VLM_PROMPT}])
    with ServerThread(image_server) as server:
        answer = ask_openai(gateway.url, token, "local-vlm", stream=False, image=server.url + "/cat.png?size=s",
                            max_tokens=3)
    assert (answer.input_tokens, answer.output_tokens) == (expected_input, 3)


def test_requests_beyond_the_cap_wait_in_line_and_are_served(gateway, tiny_vlm_dir):
    token, provider_id = local_setup(tiny_vlm_dir, "local-vlm", max_concurrency=1, max_new_tokens=4000)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)
    messages = [{"role": "user", "content": "go"}]
    holder = client.chat.completions.create(model="local-vlm", messages=messages, max_tokens=4000, stream=True)
    next(iter(holder))  # the first request holds the only slot and is generating
    served: list[tuple[str, int]] = []

    def ask(name: str) -> None:
        reply = client.chat.completions.create(model="local-vlm", messages=messages, max_tokens=3)
        served.append((name, reply.usage.completion_tokens))

    waiting = []
    for name in ("second", "third"):
        thread = threading.Thread(target=ask, args=(name,))
        thread.start()
        waiting.append(thread)
        wait_until(lambda n=len(waiting): local_models.status(provider_id)["waiting"] == n)
    assert local_models.status(provider_id)["running"] == 1
    holder.close()  # the first client gives up; its slot passes to the others in arrival order
    for thread in waiting:
        thread.join(timeout=120)
    assert served == [("second", 3), ("third", 3)]
    status = local_models.status(provider_id)
    assert (status["peak_running"], status["peak_waiting"], status["running"], status["waiting"]) == (1, 2, 0, 0)


def test_a_client_abort_stops_the_generation(gateway, tiny_vlm_dir):
    token, provider_id = local_setup(tiny_vlm_dir, "local-vlm", max_new_tokens=4000)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)
    stream = client.chat.completions.create(model="local-vlm", messages=[{"role": "user", "content": "go"}],
                                            max_tokens=4000, stream=True)
    pieces = 0
    for chunk in stream:
        pieces += bool(chunk.choices and chunk.choices[0].delta.content)
        if pieces == 3:
            break
    stream.close()
    wait_until(lambda: local_models.status(provider_id)["requests"] == 1)  # its thread has ended
    last = local_models.status(provider_id)["last_generation"]
    assert last["finish_reason"] == "cancelled"
    assert last["output_tokens"] < 4000
    row = usage_rows(provider_id, 1)[0]
    assert (row.status, row.error_type) == (499, "client_disconnected")


def test_an_idle_model_is_unloaded_and_comes_back_on_demand(gateway, tiny_vlm_dir):
    token, provider_id = local_setup(tiny_vlm_dir, "local-vlm", idle_unload_seconds=0.2)
    ask_openai(gateway.url, token, "local-vlm", stream=False, max_tokens=2)
    wait_until(lambda: not local_models.status(provider_id)["loaded"])
    assert local_models.status(provider_id)["memory_bytes"] == 0
    answer = ask_openai(gateway.url, token, "local-vlm", stream=True, max_tokens=2)
    assert answer.output_tokens == 2


def test_tools_without_template_support_are_a_clear_400(gateway, smollm2_dir):
    token, _ = local_setup(smollm2_dir, "local-smol")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="local-smol", messages=[{"role": "user", "content": PROMPT}],
            tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        )
    assert caught.value.param == "tools"
    assert "does not support tools" in caught.value.message


def test_tools_are_offered_through_a_template_that_supports_them(gateway, smollm2_tools_dir):
    token, provider_id = local_setup(smollm2_tools_dir, "local-tools", max_new_tokens=8)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    plain = client.chat.completions.create(model="local-tools", messages=messages)
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}}]
    with_tools = client.chat.completions.create(model="local-tools", messages=messages, tools=tools)
    # The tool definitions were rendered into the prompt the model saw.
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + 20
    assert local_models.status(provider_id)["supports_tools"] is True


def test_images_sent_to_a_text_model_or_undecodable_are_refused(gateway, smollm2_dir, tiny_vlm_dir):
    token, _ = local_setup(smollm2_dir, "local-smol")
    local_setup(tiny_vlm_dir, "local-vlm")
    image = "data:image/png;base64," + base64.b64encode(png()).decode()
    with pytest.raises(openai.BadRequestError, match="does not accept images"):
        ask_openai(gateway.url, token, "local-smol", stream=False, image=image)
    with pytest.raises(openai.BadRequestError, match="could not be decoded"):
        ask_openai(gateway.url, token, "local-vlm", stream=True,
                   image="data:image/png;base64," + base64.b64encode(b"not an image").decode())


def test_bench_direct_reports_ttft_and_speed(tiny_vlm_dir):
    result = local_models.bench_direct(str(tiny_vlm_dir), "hello", 4)
    assert result["output_tokens"] == 4
    assert result["ttft_s"] > 0 and result["tokens_per_s"] > 0
