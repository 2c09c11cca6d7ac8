"""Embeddings: OpenAI `POST /v1/embeddings` and Gemini `:embedContent` / `:batchEmbedContents`, each served
by `openai` or `gemini` upstreams. Same-format calls are forwarded as sent (model name aside); across
formats the texts and the requested dimensions carry over, and vectors come back in the client's shape.
Gemini reports no token usage for embeddings: those counts are estimated and flagged."""

import base64
import re
import struct
from typing import Any

import orjson

from proxy import estimate
from proxy.adapters.base import UpstreamRequest
from proxy.adapters.gemini_parts import get
from proxy.adapters.gemini_upstream import error_from_gemini_response, gemini_headers, model_url
from proxy.adapters.openai_chat import error_from_openai_body
from proxy.adapters.validation import require_dict, require_list, require_str
from proxy.asgi_io import Receive, Scope, Send
from proxy.canonical import GatewayError, Usage
from proxy.side_calls import Answer, SideCall, read_json_object, serve
from routing.selector import Candidate


def _openai_request(candidate: Candidate, body: dict[str, Any]) -> UpstreamRequest:
    provider = candidate.target.provider
    headers = {"authorization": f"Bearer {candidate.credential.secret}", "content-type": "application/json",
               **provider.extra_headers}
    return UpstreamRequest(provider.base_url.rstrip("/") + "/embeddings", headers, orjson.dumps(body))


def _gemini_request(candidate: Candidate, upstream_model: str, method: str, body: dict[str, Any]) -> UpstreamRequest:
    provider = candidate.target.provider
    return UpstreamRequest(model_url(provider.base_url, upstream_model, method),
                           gemini_headers(candidate.credential.secret, provider.extra_headers), orjson.dumps(body))


def _error(kind: str, status: int, headers: dict[str, str], body: bytes) -> GatewayError:
    if kind == "gemini":
        return error_from_gemini_response(status, body)
    return error_from_openai_body(status, headers, body)


def _estimated(texts: list[str]) -> Usage:
    tokens = sum(estimate.count_tokens(text) for text in texts)
    return Usage(input_tokens=tokens, estimated=True)


def _openai_vectors(data: dict[str, Any]) -> list[list[float]]:
    items = sorted(data.get("data") or [], key=lambda item: item.get("index", 0))
    vectors = []
    for item in items:
        vector = item.get("embedding")
        if isinstance(vector, str):  # base64 float32, when the provider was asked for it
            raw = base64.b64decode(vector)
            vector = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        vectors.append(vector)
    return vectors


def _token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value)


def _valid_input(items: list) -> bool:
    return all(isinstance(item, str) for item in items) or _token_ids(items) or all(map(_token_ids, items))


class OpenAIEmbeddings(SideCall):
    """An OpenAI client's `POST /v1/embeddings`."""

    kinds = ("openai", "gemini")

    def __init__(self, body: Any) -> None:
        self.body = require_dict(body, "body")
        self.model = require_str(self.body.get("model"), "model")
        raw = self.body.get("input")
        if isinstance(raw, str):
            raw = [raw]
        raw = require_list(raw, "input", non_empty=True)
        if not _valid_input(raw):  # passed on as it is to an OpenAI upstream: refuse what OpenAI would refuse
            raise GatewayError("invalid_request", "input must be a string, a list of strings, or token ids (a list "
                               "of integers or a list of integer lists)", param="input")
        # Token-id inputs only make sense to an OpenAI upstream, which gets the body as it is.
        self.texts = raw if all(isinstance(item, str) for item in raw) else None
        self.base64 = self.body.get("encoding_format") == "base64"
        self.dimensions = self.body.get("dimensions")
        self.estimate = sum(len(t) for t in self.texts or ()) // 4 + 1

    def build(self, candidate: Candidate, upstream_model: str) -> UpstreamRequest:
        if candidate.target.provider.kind == "openai":
            return _openai_request(candidate, {**self.body, "model": upstream_model})
        if self.texts is None:
            raise GatewayError("invalid_request", "token-id input needs an OpenAI provider; send text", param="input")
        name = "models/" + upstream_model.removeprefix("models/")
        requests = []
        for text in self.texts:
            item: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
            if self.dimensions:
                item["outputDimensionality"] = self.dimensions
            requests.append(item)
        return _gemini_request(candidate, upstream_model, "batchEmbedContents", {"requests": requests})

    def answer(self, kind: str, body: bytes) -> Answer:
        data = read_json_object(body)
        if kind == "openai":
            usage = data.get("usage") or {}
            data["model"] = self.model
            return Answer(data, Usage(input_tokens=int(usage.get("prompt_tokens") or 0)))
        vectors = [item.get("values") or [] for item in data.get("embeddings") or []]
        usage = _estimated(self.texts or [])
        out = []
        for index, vector in enumerate(vectors):
            value: Any = vector
            if self.base64:
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            out.append({"object": "embedding", "index": index, "embedding": value})
        return Answer({"object": "list", "data": out, "model": self.model,
                       "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens}},
                      usage, ((b"x-ds2-usage", b"estimated"),))

    def parse_error(self, kind: str, status: int, headers: dict[str, str], body: bytes) -> GatewayError:
        return _error(kind, status, headers, body)


def _content_text(content: Any, path: str) -> str:
    content = require_dict(content, path)
    parts = require_list(content.get("parts"), f"{path}.parts", non_empty=True)
    return " ".join(str(p.get("text") or "") for p in parts if isinstance(p, dict) and "text" in p)


class GeminiEmbeddings(SideCall):
    """A Gemini client's `:embedContent` (one text) or `:batchEmbedContents` (several)."""

    kinds = ("gemini", "openai")

    def __init__(self, body: Any, model: str, method: str) -> None:
        self.body = require_dict(body, "body")
        self.model = model.removeprefix("models/")
        self.method = method
        self.batch = method == "batchEmbedContents"
        requests = require_list(self.body.get("requests"), "requests", non_empty=True) if self.batch else [self.body]
        self.texts = [_content_text(require_dict(r, "requests[]").get("content"), "content") for r in requests]
        first = requests[0]
        config = get(first, "embedContentConfig", "embed_content_config") or {}
        self.dimensions = get(first, "outputDimensionality", "output_dimensionality") or get(
            config, "outputDimensionality", "output_dimensionality")
        self.estimate = sum(len(t) for t in self.texts) // 4 + 1

    def build(self, candidate: Candidate, upstream_model: str) -> UpstreamRequest:
        if candidate.target.provider.kind == "gemini":
            body = self.body
            if self.batch:  # each request names its model; it must be the upstream's
                name = "models/" + upstream_model.removeprefix("models/")
                body = {**body, "requests": [{**r, "model": name} for r in body["requests"]]}
            return _gemini_request(candidate, upstream_model, self.method, body)
        body: dict[str, Any] = {"model": upstream_model, "input": self.texts, "encoding_format": "float"}
        if self.dimensions:
            body["dimensions"] = self.dimensions
        return _openai_request(candidate, body)

    def answer(self, kind: str, body: bytes) -> Answer:
        data = read_json_object(body)
        if kind == "gemini":
            return Answer(data, _estimated(self.texts), ((b"x-ds2-usage", b"estimated"),))
        usage = Usage(input_tokens=int((data.get("usage") or {}).get("prompt_tokens") or 0))
        vectors = [{"values": vector} for vector in _openai_vectors(data)]
        return Answer({"embeddings": vectors} if self.batch else {"embedding": vectors[0] if vectors else {}}, usage)

    def parse_error(self, kind: str, status: int, headers: dict[str, str], body: bytes) -> GatewayError:
        return _error(kind, status, headers, body)


async def openai_embeddings(app, scope: Scope, receive: Receive, send: Send, match: re.Match) -> None:
    await serve(app, scope, receive, send, "openai_chat", OpenAIEmbeddings)


async def gemini_embeddings(app, scope: Scope, receive: Receive, send: Send, match: re.Match) -> None:
    model, method = match.group("model"), match.group("method")
    await serve(app, scope, receive, send, "gemini", lambda body: GeminiEmbeddings(body, model, method))
