"""Load with nothing lost: many mixed requests through a two-worker gateway while the fake upstream injects
faults on one credential of every route (the other stays healthy).

The mix covers every client protocol (OpenAI chat and Responses, Anthropic, Gemini, Ollama), plain and
streamed, same-vendor and converted, plus a few deliberate client errors. About 5% of requests are preceded
by a fault on credential A: 5xx, 429, connection reset, a body cut short, a garbled first event, a reply
slower than the read timeout. Pass criteria (`LoadResult.problems`): every request got exactly the status
its kind expects, no 5xx at all, every stream ended properly, and the usage table gained exactly one row
per request.

`make bench` runs 10,000 requests at 50 concurrent (`python -m bench --load`); `make test` runs a short
version (tests/test_load_nothing_lost.py).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson

from tests.infra_servers import GATEWAY_TOKEN, UPSTREAM_KEYS, FakeControl

FAULTS: list[tuple[str, dict]] = [
    ("status", {"status": 500}),
    ("status", {"status": 503}),
    ("status", {"status": 429, "retry_after": 1}),
    ("reset", {}),
    ("cut", {"after": 0}),  # plain: half a body; stream: headers, then the connection closes
    ("malformed", {"after": 0}),  # plain: half a JSON body; stream: the first event garbled
    ("slow", {"delay": 3.0}),  # longer than the providers' 2 s read timeout
]
FAULT_EVERY = 20  # one request in 20 is preceded by a fault: 5%


def _messages(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _openai_stream_ok(body: bytes) -> bool:
    lines = [line for line in body.split(b"\n") if line.startswith(b"data: ")]
    return bool(lines) and lines[-1] == b"data: [DONE]" and not any(b'"error"' in line for line in lines)


def _anthropic_stream_ok(body: bytes) -> bool:
    events = [line[7:] for line in body.split(b"\n") if line.startswith(b"event: ")]
    return bool(events) and events[-1] == b"message_stop" and b"error" not in events


def _gemini_stream_ok(body: bytes) -> bool:
    return b'"finishReason"' in body and b'"error"' not in body


def _ollama_ok(body: bytes) -> bool:
    return orjson.loads(body.strip().split(b"\n")[-1]).get("done") is True


def _json_ok(body: bytes) -> bool:
    return isinstance(orjson.loads(body), dict)


@dataclass(frozen=True)
class Kind:
    name: str
    path: str
    body: Callable[[int], bytes]
    weight: int
    expected: int = 200
    check: Callable[[bytes], bool] = _json_ok
    headers: tuple[tuple[str, str], ...] = ()


def _j(value: dict) -> bytes:
    return orjson.dumps(value)


ANTHROPIC_HEADERS = (("anthropic-version", "2023-06-01"),)
KINDS = [
    Kind("openai", "/v1/chat/completions",
         lambda i: _j({"model": "gpt-load", "messages": _messages(f"plain {i}")}), 20),
    Kind("openai-stream", "/v1/chat/completions",
         lambda i: _j({"model": "gpt-load", "stream": True, "messages": _messages(f"stream {i}")}), 15,
         check=_openai_stream_ok),
    Kind("openai-to-anthropic", "/v1/chat/completions",
         lambda i: _j({"model": "claude-load", "messages": _messages(f"cross {i}")}), 8),
    Kind("anthropic", "/v1/messages",
         lambda i: _j({"model": "claude-load", "max_tokens": 64, "messages": _messages(f"msg {i}")}), 12,
         headers=ANTHROPIC_HEADERS),
    Kind("anthropic-stream", "/v1/messages",
         lambda i: _j({"model": "claude-load", "max_tokens": 64, "stream": True, "messages": _messages(f"s {i}")}),
         10, check=_anthropic_stream_ok, headers=ANTHROPIC_HEADERS),
    Kind("anthropic-to-gemini", "/v1/messages",
         lambda i: _j({"model": "gemini-load", "max_tokens": 64, "messages": _messages(f"x {i}")}), 5,
         headers=ANTHROPIC_HEADERS),
    Kind("gemini", "/v1beta/models/gemini-load:generateContent",
         lambda i: _j({"contents": [{"role": "user", "parts": [{"text": f"gem {i}"}]}]}), 8),
    Kind("gemini-stream", "/v1beta/models/gemini-load:streamGenerateContent?alt=sse",
         lambda i: _j({"contents": [{"role": "user", "parts": [{"text": f"gs {i}"}]}]}), 6,
         check=_gemini_stream_ok),
    Kind("responses", "/v1/responses", lambda i: _j({"model": "gpt-load", "input": f"resp {i}"}), 6),
    Kind("ollama", "/api/chat",
         lambda i: _j({"model": "claude-load", "stream": False, "messages": _messages(f"ol {i}")}), 5,
         check=_ollama_ok),
    Kind("unknown-model", "/v1/chat/completions",
         lambda i: _j({"model": "no-such-model", "messages": _messages("x")}), 3, expected=404),
    Kind("bad-json", "/v1/messages", lambda i: b'{"model": "claude-load", "messages": [', 2, expected=400,
         headers=ANTHROPIC_HEADERS),
]


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: Counter = field(default_factory=Counter)
    per_kind: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    faults_injected: int = 0
    usage_rows: int = 0

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)

    @property
    def problems(self) -> list[str]:
        found = list(self.unexpected[:20])
        if self.server_errors:
            found.append(f"{self.server_errors} responses were 5xx")
        if self.usage_rows != self.requests:
            found.append(f"usage table gained {self.usage_rows} rows for {self.requests} requests")
        return found

    def as_dict(self) -> dict:
        return {
            "requests": self.requests, "seconds": round(self.seconds, 1),
            "requests_per_second": round(self.requests / self.seconds, 1) if self.seconds else None,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "faults_injected": self.faults_injected, "usage_rows": self.usage_rows,
            "server_errors": self.server_errors, "problems": self.problems,
        }


def plan(n: int, seed: int = 7) -> list[Kind]:
    rng = random.Random(seed)
    return rng.choices(KINDS, weights=[k.weight for k in KINDS], k=n)


async def _drive(gateway_url: str, fake: FakeControl, kinds: list[Kind], concurrency: int,
                 result: LoadResult) -> None:
    counter = itertools.count()
    faults = itertools.cycle(FAULTS)
    base_headers = {"authorization": f"Bearer {GATEWAY_TOKEN}", "content-type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(gateway_url, timeout=timeout, connector=connector) as session:

        async def inject() -> None:
            mode, params = next(faults)
            async with session.post(f"{fake.url}/_fake/faults",
                                    json={"key": UPSTREAM_KEYS[0], "mode": mode, "count": 1, **params}) as r:
                r.raise_for_status()
            result.faults_injected += 1

        async def worker() -> None:
            while (index := next(counter)) < len(kinds):
                kind = kinds[index]
                if index % FAULT_EVERY == FAULT_EVERY // 2:
                    await inject()
                headers = {**base_headers, **dict(kind.headers)}
                try:
                    async with session.post(kind.path, data=kind.body(index), headers=headers) as response:
                        body = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    result.statuses[-1] += 1
                    result.unexpected.append(f"#{index} {kind.name}: {type(exc).__name__}: {exc}")
                    continue
                result.statuses[status] += 1
                result.per_kind[kind.name] += 1
                if status != kind.expected:
                    result.unexpected.append(f"#{index} {kind.name}: HTTP {status}: {body[:200]!r}")
                elif status == 200 and not kind.check(body):
                    result.unexpected.append(f"#{index} {kind.name}: incomplete reply: {body[-200:]!r}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def run_load(gateway_url: str, fake: FakeControl, n: int, concurrency: int,
             count_rows: Callable[[], int], settle_timeout: float = 60.0) -> LoadResult:
    """Send `n` mixed requests; then wait for the usage rows and count exactly how many were added."""
    before = count_rows()
    kinds = plan(n)
    result = LoadResult(requests=n, seconds=0.0)
    started = time.monotonic()
    asyncio.run(_drive(gateway_url, fake, kinds, concurrency, result))
    result.seconds = time.monotonic() - started
    deadline = time.monotonic() + settle_timeout
    while count_rows() - before < n and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # a duplicate would arrive with the next batch: look once more after it
    result.usage_rows = count_rows() - before
    return result


def bench_load(n: int = 10_000, concurrency: int = 50, workers: int = 2) -> dict:
    """`make bench`'s load run: its own fake upstream, database and Redis prefix, torn down afterwards."""
    from tests.infra_servers import (
        fake_upstream,
        gateway_env,
        gateway_process,
        prepare_database,
        scratch_database,
        scratch_redis_prefix,
    )

    fake = fake_upstream().start()
    try:
        with scratch_database("bench_load") as (url, count), scratch_redis_prefix("bench_load") as (redis, prefix):
            env = gateway_env(url, redis, prefix)
            prepare_database(env, fake.url)
            gateway = gateway_process(env, workers=workers).start()
            try:
                result = run_load(gateway.url, FakeControl(fake.url), n, concurrency,
                                  lambda: count("SELECT count(*) FROM proxy_usagerecord"))
            finally:
                gateway.stop()
                gateway.remove_log()
    finally:
        fake.stop()
        fake.remove_log()
    return {**result.as_dict(), "concurrency": concurrency, "workers": workers, "passed": not result.problems}


def markdown_section(load: dict) -> list[str]:
    if "error" in load:
        return ["## Load with nothing lost", "", f"Not run: {load['error']}", ""]
    verdict = "**passed**" if load["passed"] else "**FAILED**: " + "; ".join(load["problems"][:5])
    return [
        "## Load with nothing lost", "",
        f"{load['requests']:,} mixed requests (every client protocol, plain and streamed, a few deliberate 4xx) at "
        f"{load['concurrency']} concurrent through {load['workers']} workers, {load['faults_injected']} upstream "
        f"faults injected on one credential of each route: {load['seconds']} s "
        f"({load['requests_per_second']} requests/s incl. faults).", "",
        f"Statuses: {load['statuses']} · 5xx: {load['server_errors']} · usage rows added: {load['usage_rows']:,} "
        f"· {verdict}", "",
    ]
