"""Infrastructure faults survived: Redis and Postgres restarted under load, a gateway worker killed, clients
that leave mid-stream or read slowly, and a graceful shutdown.

The gateway runs as in production (uvicorn, two workers) against a private Redis and a private Postgres
cluster started for this module on free ports, so restarting them disturbs no one else. All traffic stays on
127.0.0.1 and every load is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import aiohttp
import httpx
import orjson
import pytest

from tests.conftest import make_setup, wait_for_usage_rows
from tests.infra_servers import (
    GATEWAY_TOKEN,
    FakeControl,
    PrivatePostgres,
    PrivateRedis,
    fake_upstream,
    gateway_env,
    gateway_process,
    prepare_database,
    wait_for,
)

CHAT = "/v1/chat/completions"
AUTH = {"authorization": f"Bearer {GATEWAY_TOKEN}"}


@pytest.fixture(scope="module")
def infra():
    redis_server, postgres, fake, gateway = PrivateRedis(), PrivatePostgres(), fake_upstream(), None
    try:
        redis_server.start()
        postgres.start()
        fake.start()
        env = gateway_env(postgres.url, redis_server.url, "infra")
        prepare_database(env, fake.url)
        gateway = gateway_process(env, workers=2).start()
        yield {"redis": redis_server, "postgres": postgres, "fake": FakeControl(fake.url), "gateway": gateway,
               "env": env}
    finally:
        for process in (gateway, fake):
            if process is not None:
                process.stop()
                process.remove_log()
        redis_server.stop()
        postgres.destroy()


@pytest.fixture
def stack(infra):
    infra["fake"].reset()
    wait_for(lambda: _ready(infra["gateway"]), 30, "gateway ready")
    return infra


def _ready(gateway) -> bool:
    try:
        return httpx.get(gateway.url + "/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def usage_rows(postgres: PrivatePostgres, where: str = "TRUE") -> int:
    return postgres.count(f"SELECT count(*) FROM proxy_usagerecord WHERE {where}")  # noqa: S608 (test literals)


def chat_body(text: str, stream: bool = False, model: str = "gpt-load") -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    return body


class BackgroundLoad:
    """Plain chat requests from `concurrency` clients until stopped; counts every outcome."""

    def __init__(self, url: str, concurrency: int = 10) -> None:
        self.url, self.concurrency = url, concurrency
        self.statuses: Counter = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(self.url, timeout=timeout, headers=AUTH) as session:

            async def client(n: int) -> None:
                i = 0
                while not self._stop.is_set():
                    i += 1
                    try:
                        async with session.post(CHAT, json=chat_body(f"load {n} {i}")) as response:
                            await response.read()
                            self.statuses[response.status] += 1
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        self.errors.append(f"{type(exc).__name__}: {exc}")

            await asyncio.gather(*(client(n) for n in range(self.concurrency)))

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        wait_for(lambda: self.sent >= 20, 30, "load started")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)


def wait_rows(postgres: PrivatePostgres, expected: int, timeout: float = 30) -> int:
    try:
        wait_for(lambda: usage_rows(postgres) >= expected, timeout, "usage rows")
    except RuntimeError:
        pass
    time.sleep(0.5)  # a duplicate would arrive with the next batch
    return usage_rows(postgres)


# --- Redis and Postgres restarted under load --------------------------------------------------------

def test_redis_restarted_under_load_loses_no_request(stack):
    before = usage_rows(stack["postgres"])
    with BackgroundLoad(stack["gateway"].url) as load:
        stack["redis"].stop()
        try:
            time.sleep(2)  # requests keep coming while Redis is gone: limits fall back to per-process counters
            during = load.sent
        finally:
            stack["redis"].start()
        wait_for(lambda: _ready(stack["gateway"]), 30, "readyz after Redis returned")
        time.sleep(1)
    assert load.sent > during > 20
    assert load.errors == [] and set(load.statuses) == {200}, (load.statuses, load.errors[:5])
    assert wait_rows(stack["postgres"], before + load.sent) == before + load.sent


def test_postgres_restarted_under_load_rows_are_written_when_it_returns(stack):
    postgres = stack["postgres"]
    before = usage_rows(postgres)
    with BackgroundLoad(stack["gateway"].url) as load:
        postgres.stop()
        try:
            time.sleep(3)  # rows pile up in each worker's buffer (DS2API_USAGE_BUFFER_MAX) meanwhile
            during = load.sent
        finally:
            postgres.start()
        time.sleep(1)
    assert load.sent > during > 20
    assert load.errors == [] and set(load.statuses) == {200}, (load.statuses, load.errors[:5])
    assert wait_rows(postgres, before + load.sent) == before + load.sent


def test_usage_rows_beyond_the_buffer_size_are_dropped_and_logged(infra):
    """The documented bound: past DS2API_USAGE_BUFFER_MAX rows per worker, new rows are dropped (and said so)."""
    postgres = infra["postgres"]
    gateway = gateway_process({**infra["env"], "DS2API_USAGE_BUFFER_MAX": "10"}, workers=1).start()
    try:
        assert httpx.post(gateway.url + CHAT, json=chat_body("warm"), headers=AUTH, timeout=30).status_code == 200
        before = wait_rows(postgres, usage_rows(postgres) + 1)
        postgres.stop()
        try:
            for i in range(25):
                response = httpx.post(gateway.url + CHAT, json=chat_body(f"b{i}"), headers=AUTH, timeout=30)
                assert response.status_code == 200
        finally:
            postgres.start()
        assert wait_rows(postgres, before + 10, timeout=15) == before + 10
        assert "usage buffer full" in gateway.output()
    finally:
        gateway.stop()
        gateway.remove_log()


# --- a worker killed -----------------------------------------------------------------------------------

def _workers(gateway) -> set[int]:
    found = set()
    for pid in gateway.children():
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.add(pid)
        except OSError:
            continue
    return found


def test_a_killed_worker_is_replaced_and_service_goes_on(stack):
    gateway, postgres = stack["gateway"], stack["postgres"]
    workers = wait_for(lambda: (w := _workers(gateway)) and len(w) == 2 and w, 30, "two workers")
    victim = min(workers)
    with BackgroundLoad(gateway.url) as load:
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        replaced = wait_for(lambda: (w := _workers(gateway)) and len(w) == 2 and victim not in w and w, 60,
                            "a replacement worker")
        after_kill = load.sent
        wait_for(lambda: load.sent > after_kill + 100, 60, "traffic after the replacement")
    assert victim not in replaced
    # Requests in flight on the killed worker lose their connection (never a 5xx); everything else is served.
    assert set(load.statuses) == {200}, load.statuses
    assert len(load.errors) <= load.concurrency, load.errors[:5]
    # Rows the killed worker had not written yet (at most one flush interval's worth) are lost; the rest land.
    before_check = sum(load.statuses.values())
    rows = wait_rows(postgres, before_check, timeout=15)
    assert rows >= before_check - 2 * load.concurrency


# --- clients that leave or read slowly -----------------------------------------------------------------

def test_client_disconnect_mid_stream_cancels_the_upstream_and_records_usage(fake, gateway):
    setup = make_setup(fake.url, model="long")  # the fake streams 200 words for "long"
    fake.state.add_fault("*", "drip", delay=1.0)  # a second apart: a 200 s stream
    with httpx.stream("POST", gateway.url + CHAT, json=chat_body("go", stream=True, model="long"),
                      headers={"authorization": f"Bearer {setup.token}"}, timeout=30) as response:
        lines = response.iter_lines()
        while '"content":"w' not in (line := next(lines)):  # read up to the first word of the reply
            assert not line or line.startswith("data: ")
        assert fake.state.in_flight == 1
    # the client is gone: the gateway drops the upstream request instead of relaying 200 s into the void
    wait_for(lambda: fake.state.in_flight == 0, 10, "upstream request cancelled")
    row = wait_for_usage_rows(1)[0]
    assert (row.status, row.error_type, row.streamed) == (499, "client_disconnected", True)
    assert row.output_tokens >= 1 and row.estimated  # the part that was relayed is counted


def _rss_mb(pids: set[int]) -> float:
    total = 0.0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def test_a_slow_reader_does_not_make_the_gateway_buffer_the_stream(stack):
    gateway = stack["gateway"]
    workers = wait_for(lambda: (w := _workers(gateway)) and len(w) == 2 and w, 30, "two workers")
    # The fake echoes the prompt one word per event: 300,000 words make a ~50 MB stream.
    body = orjson.dumps(chat_body("a " * 300_000, stream=True))
    request = (f"POST {CHAT} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {GATEWAY_TOKEN}\r\n"
               f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.connect(("127.0.0.1", gateway.port))
        sock.sendall(request)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(0.3)
        baseline = peak = _rss_mb(workers)  # the request itself is parsed and forwarded by now
        for _ in range(30):  # the reader stalls for ~3 s while the provider could send everything
            time.sleep(0.1)
            peak = max(peak, _rss_mb(workers))
        received = 0
        sock.settimeout(10)
        while received < 5_000_000:  # then it reads on a little: the stream is alive, not stuck
            chunk = sock.recv(65536)
            assert chunk, (received, gateway.output()[-3000:])
            received += len(chunk)
    assert peak - baseline < 20, (baseline, peak)


# --- graceful shutdown -------------------------------------------------------------------------------

class StreamClient(threading.Thread):
    def __init__(self, url: str, body: dict) -> None:
        super().__init__(daemon=True)
        self.url, self.body = url, body
        self.started = threading.Event()
        self.payloads: list = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url + CHAT, json=self.body, headers=AUTH, timeout=60) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        data = line[6:]
                        self.payloads.append(data if data == "[DONE]" else orjson.loads(data))
                        self.started.set()
        except httpx.HTTPError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.started.set()

    @property
    def text(self) -> str:
        return "".join(p["choices"][0]["delta"].get("content") or "" for p in self.payloads
                       if isinstance(p, dict) and p.get("choices"))


def _shutdown_with_streams(infra, grace: int, words: int, delay: float, n: int = 4):
    """Start n drip streams on a fresh gateway, SIGTERM it once all have begun; returns (clients, exit code)."""
    env = {**infra["env"], "DS2API_USAGE_FLUSH_SECONDS": "600", "DS2API_USAGE_BATCH_SIZE": "100000"}
    gateway = gateway_process(env, workers=2, grace=grace).start()
    try:
        infra["fake"].reset()
        infra["fake"].add_fault("*", "drip", delay=delay)
        text = " ".join(f"w{i}" for i in range(words))
        clients = [StreamClient(gateway.url, chat_body(text, stream=True)) for _ in range(n)]
        for client in clients:
            client.start()
        for client in clients:
            assert client.started.wait(30)
        gateway.signal(signal.SIGTERM)
        code = gateway.wait(grace + 20)
        for client in clients:
            client.join(10)
        return clients, code, text
    finally:
        gateway.stop()
        gateway.remove_log()


def test_sigterm_lets_in_flight_streams_finish_and_flushes_usage(infra):
    postgres = infra["postgres"]
    before = usage_rows(postgres, "status = 200")
    clients, code, text = _shutdown_with_streams(infra, grace=15, words=12, delay=0.25)
    assert code == 0
    for client in clients:
        assert client.error is None and client.payloads[-1] == "[DONE]"
        assert client.text == "echo: " + text
    # flushing every 10 minutes: only the shutdown flush can have written these
    assert usage_rows(postgres, "status = 200") == before + len(clients)


def test_streams_outliving_the_grace_period_end_with_a_protocol_error(infra):
    postgres = infra["postgres"]
    before = usage_rows(postgres, "error_type = 'shutdown'")
    clients, code, _ = _shutdown_with_streams(infra, grace=1, words=60, delay=0.5)
    for client in clients:
        assert client.error is None, client.error
        last = client.payloads[-1]
        assert isinstance(last, dict) and "error" in last and "shutting down" in last["error"]["message"]
    assert usage_rows(postgres, "error_type = 'shutdown'") == before + len(clients)
