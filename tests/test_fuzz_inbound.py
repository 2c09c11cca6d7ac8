"""Property-based tests of every inbound endpoint and of the config importer: whatever a client sends, the
answer is a success or a 4xx in the client's own protocol's shape, never a 500, and the worker stays alive.

Bodies are drawn as arbitrary JSON, as valid requests with fields removed or replaced by values of the wrong
type (deeply nested ones included), with absurd `max_tokens` or unknown models, and as raw bytes (truncated
JSON, invalid UTF-8). Example counts are small and there is no deadline: this is a smoke alarm for crashes,
not a proof.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing.config_file import ConfigError, import_config
from tests.conftest import make_setup

MODEL = "gpt-test"
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --- what each endpoint's errors look like -------------------------------------------------------------

def openai_error(body) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str)


def anthropic_error(body) -> bool:
    return (isinstance(body, dict) and body.get("type") == "error" and isinstance(body.get("error"), dict)
            and isinstance(body["error"].get("type"), str) and isinstance(body["error"].get("message"), str))


def gemini_error(body) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (isinstance(error, dict) and isinstance(error.get("code"), int) and isinstance(error.get("message"), str)
            and isinstance(error.get("status"), str))


def ollama_error(body) -> bool:
    return isinstance(body, dict) and isinstance(body.get("error"), str)


def _messages() -> list:
    return [{"role": "user", "content": "hello fuzz"}]


ENDPOINTS: dict[str, tuple[str, dict, Callable]] = {
    "openai_chat": ("/v1/chat/completions", {"model": MODEL, "messages": _messages(), "max_tokens": 5},
                    openai_error),
    "openai_responses": ("/v1/responses", {"model": MODEL, "input": "hello fuzz", "max_output_tokens": 5},
                         openai_error),
    "openai_embeddings": ("/v1/embeddings", {"model": MODEL, "input": ["hello", "fuzz"]}, openai_error),
    "anthropic": ("/v1/messages", {"model": MODEL, "max_tokens": 5, "messages": _messages(),
                                   "system": "be brief"}, anthropic_error),
    "anthropic_count": ("/v1/messages/count_tokens", {"model": MODEL, "messages": _messages()},
                        anthropic_error),
    "gemini": (f"/v1beta/models/{MODEL}:generateContent",
               {"contents": [{"role": "user", "parts": [{"text": "hello fuzz"}]}],
                "generationConfig": {"maxOutputTokens": 5}}, gemini_error),
    "gemini_stream": (f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                      {"contents": [{"role": "user", "parts": [{"text": "hello fuzz"}]}]}, gemini_error),
    "gemini_count": (f"/v1beta/models/{MODEL}:countTokens",
                     {"contents": [{"role": "user", "parts": [{"text": "hello fuzz"}]}]}, gemini_error),
    "gemini_embed": (f"/v1beta/models/{MODEL}:embedContent", {"content": {"parts": [{"text": "hello"}]}},
                     gemini_error),
    "ollama_chat": ("/api/chat", {"model": MODEL, "messages": _messages(), "stream": False,
                                  "options": {"num_predict": 5}}, ollama_error),
    "ollama_generate": ("/api/generate", {"model": MODEL, "prompt": "hello fuzz", "stream": False}, ollama_error),
}


# --- strategies ----------------------------------------------------------------------------------------

leaves = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
          | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16)
absurd_numbers = st.sampled_from([0, -1, 2**31, 2**53 + 1, 2**63 - 1, 10**30, 1.5, -0.0, "100", True, None])


def nested(depth: int):
    value: object = "deep"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def _paths(value, prefix=()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _set(body, path: tuple, value, delete: bool = False):
    node = body
    for step in path[:-1]:
        node = node[step]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


@st.composite
def mutated(draw, base: dict):
    """A valid body with 1-3 fields removed or replaced (wrong types, deep nesting, absurd numbers)."""
    body = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(body)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["delete", "replace", "nest", "absurd", "model"]))
        if action == "delete":
            _set(body, path, None, delete=True)
        elif action == "replace":
            _set(body, path, draw(json_values))
        elif action == "nest":
            _set(body, path, nested(draw(st.sampled_from([50, 400, 900]))))
        elif action == "absurd":
            key = draw(st.sampled_from(["max_tokens", "max_output_tokens", "max_completion_tokens", "n",
                                        "temperature", "top_p", "num_predict"]))
            body[key] = draw(absurd_numbers)
        else:
            body["model"] = draw(st.text(max_size=30))
    return body


raw_bodies = st.one_of(
    st.binary(max_size=64),
    st.just(b'{"model": "gpt-test", "messages": ['),  # truncated
    st.just(b'{"model": "gpt-test\xff\xfe", "messages": []}'),  # invalid UTF-8 inside a string
    st.just(b"\xc3\x28" * 10),
    st.just(b"[" * 5000 + b"]" * 5000),  # deeper than any JSON parser should follow
    st.just(b'{"a": ' * 3000 + b"1" + b"}" * 3000),
    st.just(b""),
    st.just(b"null"),
    st.just(b'"just a string"'),
)


# --- the gateway under fuzz ---------------------------------------------------------------------------

@pytest.fixture
def target(fake, gateway):
    setup = make_setup(fake.url, model=MODEL)
    client = httpx.Client(base_url=gateway.url, timeout=20,
                          headers={"authorization": f"Bearer {setup.token}", "anthropic-version": "2023-06-01"})
    yield client
    client.close()


def check(client: httpx.Client, name: str, content: bytes) -> None:
    path, _, native = ENDPOINTS[name]
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code < 500, (name, content[:300], response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert native(body), (name, response.status_code, body)


def still_serving(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json={"model": MODEL, "messages": _messages()})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "echo: hello fuzz"


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_valid_base_bodies_succeed(target, name):
    path, base, _ = ENDPOINTS[name]
    response = target.post(path, json=base)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_mutated_bodies_get_a_native_4xx_or_a_reply(target, name):
    @FUZZ
    @given(body=mutated(ENDPOINTS[name][1]))
    def run(body):
        check(target, name, json.dumps(body).encode())

    run()
    still_serving(target)


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_arbitrary_json_and_raw_bytes_get_a_native_4xx(target, name):
    @FUZZ
    @given(content=st.one_of(json_values.map(lambda v: json.dumps(v).encode()), raw_bodies))
    def run(content):
        check(target, name, content)

    run()
    still_serving(target)


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_oversized_bodies_get_413_in_protocol(target, gateway, name, monkeypatch):
    monkeypatch.setattr(gateway.proxy_app.runtime, "max_body", 4096)
    path, base, native = ENDPOINTS[name]
    body = {**base, "padding": "x" * 10_000}
    response = target.post(path, json=body)
    assert response.status_code == 413 and native(response.json()), response.text
    assert "4096" in response.text
    monkeypatch.undo()
    assert target.post(path, json=body).status_code == 200  # the same body under the default limit


def test_body_limit_comes_from_the_environment(settings):
    from proxy.runtime import Runtime

    settings.DS2API_MAX_BODY_BYTES = 1234
    assert Runtime().max_body == 1234


def test_unknown_models_are_a_native_404(target):
    for name in ("openai_chat", "anthropic", "ollama_chat", "openai_responses"):
        path, base, native = ENDPOINTS[name]
        response = target.post(path, json={**base, "model": "no-such-model"})
        assert response.status_code == 404 and native(response.json()), (name, response.text)
    response = target.post("/v1beta/models/no-such-model:generateContent", json=ENDPOINTS["gemini"][1])
    assert response.status_code == 404 and gemini_error(response.json())


# --- the config importer -------------------------------------------------------------------------------

BASE_CONFIG = {
    "providers": [{"name": "p1", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                   "credentials": [{"name": "c1", "secret": "sk-fuzz-0001", "rpm": 10}]}],
    "routes": [{"model": "m1", "strategy": "round_robin", "targets": [{"provider": "p1", "model": "x"}]}],
    "teams": [{"name": "t1", "models": ["m1"], "tokens": [{"name": "k1", "rpm": 5}]}],
}


@pytest.mark.django_db(transaction=True)
@FUZZ
@given(data=st.one_of(mutated(BASE_CONFIG), json_values))
def test_config_importer_refuses_bad_input_with_a_config_error(data):
    try:
        import_config(data, source="fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml: ")
