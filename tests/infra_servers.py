"""Throwaway servers for fault and load tests: a private Redis, a private Postgres cluster, the fake upstream
and the gateway, each a real process on its own free 127.0.0.1 port.

The machine's shared Postgres (5432) and Redis (6379) serve other test runs at the same time, so tests that
stop or restart a server only ever touch the private ones started here. Every class stops what it started;
use them from fixtures with finalizers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
GATEWAY_TOKEN = "ds2-infra-test-token-0123456789abcdefghijk"  # noqa: S105 (a test token)
UPSTREAM_KEYS = ("sk-infra-upstream-key-aaaa-0001", "sk-infra-upstream-key-bbbb-0002")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not happen within {timeout}s")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _port_open(self.port), 10, "redis start")
        return self

    def stop(self) -> None:
        """SIGKILL: an abrupt loss, as when a Redis host dies; everything it held is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class PrivatePostgres:
    """A Postgres 15 cluster in a temporary folder, run as the `postgres` system user (it refuses root)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="ds2-pg-"))
        self.data = self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/ds2api"

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=60)

    def start(self) -> PrivatePostgres:
        if not self.data.exists():
            if os.geteuid() == 0:
                shutil.chown(self.directory, "postgres", "postgres")
            self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                              "--no-sync", "-E", "UTF8")
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30", "-l", str(self.directory / "log"),
            "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c max_connections=200", "start")
        admin = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'ds2api'").fetchone():
                conn.execute("CREATE DATABASE ds2api")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)

    def count(self, sql: str, *params) -> int:
        with psycopg.connect(self.url, connect_timeout=5) as conn:
            return int(conn.execute(sql, params).fetchone()[0])


class Process:
    """A server process in its own session (so its workers stop with it), ready once `ready_path` answers."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict | None = None,
                 ready_path: str = "/healthz") -> None:
        self.name, self.cmd, self.port, self.ready_path = name, cmd, port, ready_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = Path(tempfile.mkstemp(prefix=f"ds2-{name}-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Process:
        with open(self.log, "ab") as handle:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                         start_new_session=True)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.output()[-3000:]}")
            try:
                return httpx.get(self.url + self.ready_path, timeout=1).status_code < 500
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, f"{self.name} start")
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> list[int]:
        if self.proc is None:
            return []
        found = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(pid) for pid in found.stdout.split()]

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        self.proc = None

    def remove_log(self) -> None:
        self.log.unlink(missing_ok=True)


def fake_upstream() -> Process:
    port = free_port()
    return Process("fake", [sys.executable, "-m", "tests.fakes.upstream", "--port", str(port)], port,
                   ready_path="/_fake/stats")


class FakeControl:
    """The fake upstream's control API (`/_fake/...`), for a fake running in another process."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _call(self, method: str, path: str, **kwargs) -> dict:
        response = httpx.request(method, f"{self.url}/_fake/{path}", timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self._call("POST", "reset")

    def add_fault(self, key: str = "*", mode: str = "status", **params) -> None:
        self._call("POST", "faults", json={"key": key, "mode": mode, **params})

    def configure(self, **values) -> None:
        self._call("POST", "config", json=values)

    def stats(self) -> dict:
        return self._call("GET", "stats", params={"arrivals": "0"})


ROUTES = {"gpt-load": ("openai", "fake-model"), "claude-load": ("anthropic", "claude-fake"),
          "gemini-load": ("gemini", "gemini-fake")}


def gateway_config(fake_url: str, read_timeout: float) -> dict:
    """One provider per upstream kind, each with credentials A and B, and a route to each; one team token."""
    providers = [
        {"name": f"fake-{kind}", "kind": kind, "base_url": fake_url + ("/v1" if kind == "openai" else ""),
         "read_timeout": read_timeout,
         "credentials": [{"name": "key-a", "secret": "env:INFRA_KEY_A"}, {"name": "key-b", "secret": "env:INFRA_KEY_B"}]}
        for kind in ("openai", "anthropic", "gemini")
    ]
    routes = [{"model": model, "retry_budget": 3, "targets": [{"provider": f"fake-{kind}", "model": upstream}]}
              for model, (kind, upstream) in ROUTES.items()]
    teams = [{"name": "load", "tokens": [{"name": "load", "value": "env:INFRA_GATEWAY_TOKEN"}]}]
    return {"providers": providers, "routes": routes, "teams": teams}


def gateway_env(database_url: str, redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """The gateway's environment: DJANGO_SECRET_KEY / DS2API_ENCRYPTION_KEYS come from ours (or .data/)."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DS2API_REDIS_PREFIX": prefix,
        "DS2API_ALLOW_PRIVATE_UPSTREAMS": "1",
        "DS2API_USAGE_FLUSH_SECONDS": "0.2",
        "DS2API_REQUEST_LOG": "0",
        "LOG_LEVEL": "WARNING",
        "INFRA_KEY_A": UPSTREAM_KEYS[0],
        "INFRA_KEY_B": UPSTREAM_KEYS[1],
        "INFRA_GATEWAY_TOKEN": GATEWAY_TOKEN,
        **extra,
    }


def prepare_database(env: dict[str, str], fake_url: str, read_timeout: float = 2.0) -> None:
    """Migrate the gateway's database and import the test configuration (routes over two keys each)."""
    full_env = {**os.environ, **env}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=full_env, check=True,
                   timeout=300)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(gateway_config(fake_url, read_timeout), handle)
    try:
        subprocess.run([sys.executable, "manage.py", "gateway", "import", handle.name, "--prune"], cwd=ROOT,
                       env=full_env, check=True, stdout=subprocess.DEVNULL, timeout=120)
    finally:
        os.unlink(handle.name)


def gateway_process(env: dict[str, str], workers: int = 2, grace: int = 10, log_level: str = "warning") -> Process:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "ds2api_site.asgi:application", "--host", "127.0.0.1", "--port",
           str(port), "--workers", str(workers), "--lifespan", "on", "--http", "httptools", "--no-access-log",
           "--log-level", log_level, "--timeout-graceful-shutdown", str(grace)]
    return Process("gateway", cmd, port, env=env)


def _shared_urls() -> tuple[str, str, str]:
    """The shared Postgres/Redis this test run uses (its own database name and Redis prefix)."""
    database_url = os.environ.get("DATABASE_URL", "postgres://root@127.0.0.1:5432/ds2api")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = os.environ.get("DS2API_REDIS_PREFIX", "ds2api")
    return database_url, redis_url, prefix


@contextlib.contextmanager
def scratch_database(suffix: str):
    """A fresh database beside this run's own on the shared Postgres; yields (url, count(sql) function)."""
    base, _, _ = _shared_urls()
    parts = urlsplit(base)
    name = f"{parts.path.lstrip('/') or 'ds2api'}_{suffix}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    url = urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')

    def count(sql: str, *params) -> int:
        with psycopg.connect(url, connect_timeout=5) as conn:
            return int(conn.execute(sql, params).fetchone()[0])

    try:
        yield url, count
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_redis_prefix(suffix: str):
    """A Redis key prefix of its own on the shared Redis; its keys are deleted afterwards."""
    _, redis_url, prefix = _shared_urls()
    scratch = f"{prefix}_{suffix}"
    try:
        yield redis_url, scratch
    finally:
        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(f"{scratch}:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start:start + 1000])
        finally:
            client.close()
