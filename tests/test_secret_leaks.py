"""Secrets never leak: with known secrets configured, run the error paths, debug logging and every export, then
look for the secrets in every log line, response, page, API answer, export, database row and Redis value.

Secrets: a provider key (and the hidden part of it: everything but the last four characters), a gateway token
(everything but its visible prefix and last four), the Django secret key, the encryption keys and an admin
password. A compromised provider is simulated by upstream errors that echo the key they were sent.
"""

from __future__ import annotations

import logging
import re
from io import StringIO

import httpx
import orjson
import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from proxy.models import UsageRecord
from routing.config_file import dump_yaml, export_config
from tests.conftest import make_setup, wait_for_usage_rows
from tests.infra_servers import (
    GATEWAY_TOKEN,
    UPSTREAM_KEYS,
    gateway_env,
    gateway_process,
    prepare_database,
    scratch_database,
    scratch_redis_prefix,
)

PROVIDER_SECRET = "sk-leakcheck-PROVIDER-Zq81xW3vB7nM2kP9aT0y"
ADMIN_PASSWORD = "correct-horse-battery"  # tests.conftest.admin_user


def secret_needles(*, provider: tuple[str, ...], tokens: tuple[str, ...]) -> dict[str, str]:
    """What must never appear: whole secrets and their hidden parts (last-4 hints and prefixes are allowed)."""
    needles = {"DJANGO_SECRET_KEY": settings.SECRET_KEY, "admin password": ADMIN_PASSWORD}
    for i, key in enumerate(settings.DS2API_ENCRYPTION_KEYS):
        needles[f"encryption key {i}"] = key
    for i, secret in enumerate(provider):
        needles[f"provider secret {i}"] = secret[:-4]
    for i, token in enumerate(tokens):
        needles[f"gateway token {i}"] = token[12:-4]  # 12: the visible prefix shown in the dashboard
    return needles


def leaks(text: str, needles: dict[str, str]) -> list[str]:
    return [name for name, needle in needles.items() if needle and needle in text]


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # includes the traceback text of logged exceptions


@pytest.fixture
def all_logs():
    """Every log record of the process at DEBUG, including the request log that does not propagate (but not
    httpx's: that is this test's own client, logging the URLs it calls)."""
    handler = Capture()
    handler.addFilter(lambda record: not record.name.startswith(("httpx", "httpcore")))
    loggers = [logging.getLogger(), logging.getLogger("ds2api.requests")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield handler.lines
    for lg, level in saved:
        lg.removeHandler(handler)
        lg.setLevel(level)


def database_dump() -> str:
    """Every row of every table as JSON text: what a stolen database dump holds."""
    out = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT row_to_json(t)::text FROM "{table}" t')  # noqa: S608 (catalog table names)
            out.extend(row[0] for row in cursor.fetchall())
    return "\n".join(out)


def redis_dump() -> str:
    client = redis.Redis.from_url(settings.REDIS_URL)
    out = []
    try:
        for key in client.scan_iter(f"{settings.REDIS_PREFIX}:*", count=1000):
            kind = client.type(key)
            value = {b"string": lambda k: client.get(k), b"hash": lambda k: client.hgetall(k),
                     b"list": lambda k: client.lrange(k, 0, -1), b"zset": lambda k: client.zrange(k, 0, -1),
                     b"set": lambda k: client.smembers(k)}.get(kind, lambda k: b"")(key)
            out.append(f"{key!r} {value!r}")
    finally:
        client.close()
    return "\n".join(out)


def test_error_paths_pages_exports_and_storage_never_show_a_secret(fake, gateway, admin_user, client, all_logs):
    setup = make_setup(fake.url, secrets=(PROVIDER_SECRET,))
    needles = secret_needles(provider=(PROVIDER_SECRET,), tokens=(setup.token,))
    seen: list[tuple[str, str]] = []
    auth = {"authorization": f"Bearer {setup.token}"}

    def call(path: str, body: dict, headers: dict | None = None) -> None:
        response = httpx.post(gateway.url + path, json=body, headers=headers or auth, timeout=30)
        seen.append((f"POST {path} -> {response.status_code}", f"{response.headers}\n{response.text}"))

    chat = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    call("/v1/chat/completions", chat)  # a success, for the request log and usage pages
    # a compromised or chatty provider echoes the key it was sent, in every status class
    for status in (400, 404, 422, 500, 503):
        fake.state.add_fault("*", "status", status=status, count=1,
                             message=f"Incorrect API key provided: {PROVIDER_SECRET}. Check it.")
        call("/v1/chat/completions", chat)
        fake.state.add_fault("*", "status", status=status, count=1, message=f"key {PROVIDER_SECRET} refused")
        call("/v1/messages", {**chat, "max_tokens": 5})
    fake.state.add_fault("*", "status", status=400, count=1, message=f"bad key {PROVIDER_SECRET}")
    call("/v1/embeddings", {"model": "gpt-test", "input": "x"})
    fake.state.configure(invalid_keys=[PROVIDER_SECRET])  # the provider refuses the key
    call("/v1/chat/completions", chat)
    call("/v1/chat/completions", {**chat, "stream": True})
    fake.state.configure(invalid_keys=[])
    near_miss = setup.token[:-6] + "abcdef"
    call("/v1/chat/completions", chat, {"authorization": f"Bearer {near_miss}"})
    call("/v1/chat/completions", chat, {"x-api-key": setup.token + "x"})
    call("/v1beta/models/gpt-test:generateContent?key=" + setup.token[:-1] + "0", {"contents": []}, {})
    needles["near-miss token"] = near_miss[12:]
    rows = wait_for_usage_rows(17)

    client.force_login(admin_user)
    credential = setup.credentials[0]
    pages = ["/", "/providers/", f"/providers/{setup.provider.id}/", f"/credentials/{credential.id}/",
             "/routes/", "/usage/", "/usage/export.csv", "/requests/", "/audit/", "/audit/?format=csv",
             "/teams/", f"/teams/{setup.team.id}/", f"/teams/{setup.team.id}/tokens/", "/playground/",
             "/api/providers/", "/api/credentials/", f"/api/credentials/{credential.id}/", "/api/tokens/",
             "/api/audit-events/", "/api/usage/", "/api/teams/", "/api/routes/"]
    pages += [f"/requests/{row.id}/" for row in rows[:3]]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, (page, response.status_code)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        seen.append((f"GET {page}", body.decode(errors="replace")))
    metrics = httpx.get(gateway.url + "/metrics", timeout=10)
    seen.append(("GET /metrics", metrics.text))

    out = StringIO()
    call_command("gateway", "export", stdout=out)
    seen.append(("gateway export", out.getvalue()))
    seen.append(("export_config", dump_yaml(export_config())))
    seen.append(("database dump", database_dump()))
    seen.append(("redis dump", redis_dump()))
    seen.append(("logs", "\n".join(all_logs)))
    seen.append(("usage rows", "\n".join(f"{r.error_type} {r.client_model}" for r in UsageRecord.objects.all())))

    found = [(where, leaks(text, needles)) for where, text in seen if leaks(text, needles)]
    assert found == [], found
    # the provider's error did reach the client, with the key masked to its last four characters
    echoed = [text for where, text in seen if where.startswith("POST /v1/chat") and "Incorrect API key" in text]
    assert echoed and all("****" + PROVIDER_SECRET[-4:] in text for text in echoed)
    # and the check can fail: the secrets really are in play (ciphertext and digest stand in for them)
    assert PROVIDER_SECRET[-4:] in database_dump() and re.search(r"[0-9a-f]{64}", database_dump())


# --- the real server with debug on ---------------------------------------------------------------------

@pytest.fixture
def debug_gateway(fake):
    with scratch_database("leaks") as (database_url, _), scratch_redis_prefix("leaks") as (redis_url, prefix):
        env = gateway_env(database_url, redis_url, prefix, DEBUG="1", LOG_LEVEL="DEBUG", DS2API_REQUEST_LOG="1",
                          PYTHONASYNCIODEBUG="1")
        prepare_database(env, fake.url)
        gateway = gateway_process(env, workers=1, log_level="debug").start()
        try:
            yield gateway, env
        finally:
            gateway.stop()
            gateway.remove_log()


def test_debug_logging_of_a_real_server_never_shows_a_secret(fake, debug_gateway):
    gateway, env = debug_gateway
    needles = secret_needles(provider=UPSTREAM_KEYS, tokens=(GATEWAY_TOKEN,))
    responses = []
    auth = {"authorization": f"Bearer {GATEWAY_TOKEN}"}
    chat = {"model": "gpt-load", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        responses.append(http.post("/v1/chat/completions", json=chat, headers=auth))
        responses.append(http.post("/v1/chat/completions", json={**chat, "stream": True}, headers=auth))
        for key in UPSTREAM_KEYS:
            fake.state.add_fault(key, "status", status=400, count=1, message=f"your key {key} is wrong")
        responses.append(http.post("/v1/chat/completions", json=chat, headers=auth))
        fake.state.configure(invalid_keys=list(UPSTREAM_KEYS))
        responses.append(http.post("/v1/messages", json={**chat, "model": "claude-load", "max_tokens": 5},
                                   headers={**auth, "anthropic-version": "2023-06-01"}))
        fake.state.configure(invalid_keys=[])
        responses.append(http.post("/v1/chat/completions", json=chat,
                                   headers={"authorization": f"Bearer {GATEWAY_TOKEN[:-1]}Z"}))
        responses.append(http.post("/v1/chat/completions", content=b"{not json", headers=auth))
        responses.append(http.get("/no-such-page/"))  # Django's debug 404 page
        responses.append(http.get("/readyz"))
    assert [r.status_code for r in responses][:2] == [200, 200]
    export = subprocess_export(env)
    texts = [f"{r.request.method} {r.url} -> {r.status_code}\n{r.headers}\n{r.text}" for r in responses]
    texts += [export, gateway.output()]
    assert "DEBUG" in gateway.output()  # debug logging really was on
    found = [(text[:80], leaks(text, needles)) for text in texts if leaks(text, needles)]
    assert found == [], found


def subprocess_export(env: dict[str, str]) -> str:
    import os
    import subprocess
    import sys

    from tests.infra_servers import ROOT

    result = subprocess.run([sys.executable, "manage.py", "gateway", "export"], cwd=ROOT, env={**os.environ, **env},
                            capture_output=True, text=True, timeout=120, check=True)
    assert "providers" in result.stdout
    return result.stdout + result.stderr


def test_a_stolen_database_dump_holds_no_usable_secret(db):
    from routing.models import Credential

    setup = make_setup("http://127.0.0.1:9/v1", secrets=(PROVIDER_SECRET,))
    assert leaks(database_dump(), secret_needles(provider=(PROVIDER_SECRET,), tokens=(setup.token,))) == []
    stored = list(Credential.objects.values_list("secret_ciphertext", "last4"))
    assert stored == [(stored[0][0], PROVIDER_SECRET[-4:])] and PROVIDER_SECRET not in str(stored[0][0])


def test_access_logs_leave_out_query_strings():
    """Gemini clients may send their token as `?key=`: neither `make run` nor the nginx of deploy/ logs it."""
    from pathlib import Path

    from ds2api_site.devstack.stack import Endpoint, child_specs

    web = next(spec for spec in child_specs(Endpoint("127.0.0.1", 8000), {}, Path("/tmp")) if spec.name == "web")
    assert "--no-access-log" in web.argv
    nginx = (Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf").read_text()
    formats = re.findall(r"log_format\s+(\w+)\s+((?:'[^']*'\s*)+);", nginx)
    assert formats and all(not re.search(r"\$(request|args|query_string|request_uri)\b", body) for _, body in formats)
    assert re.search(r"access_log\s+\S+\s+" + formats[0][0] + ";", nginx)



def test_a_provider_echoing_its_key_inside_a_stream_or_a_200_body_is_scrubbed_too(fake, gateway):
    from routing import services
    from tests.servers import ServerThread

    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "partial "}, "finish_reason": None}]}
    leak = {"error": {"message": f"aborted for key {PROVIDER_SECRET}", "type": "server_error"}}

    async def chatty(scope, receive, send):  # the variant is the first path segment of the base URL
        await receive()
        variant = scope["path"].split("/")[1]
        if variant == "plain":
            body, kind = orjson.dumps(leak), b"application/json"
        else:
            events = ([chunk] if variant == "late" else []) + [leak]
            body, kind = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events), b"text/event-stream"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": body})

    setup = make_setup(fake.url, secrets=(PROVIDER_SECRET,))
    texts = []
    with ServerThread(chatty) as server:
        for variant in ("early", "late", "plain"):
            services.save_provider(setup.provider.name, kind="openai", base_url=f"{server.url}/{variant}/v1")
            request = {"model": "gpt-test", "stream": variant != "plain",
                       "messages": [{"role": "user", "content": "hi"}]}
            texts.append(httpx.post(gateway.url + "/v1/chat/completions", json=request, timeout=30,
                                    headers={"authorization": f"Bearer {setup.token}"}).text)
    assert all(PROVIDER_SECRET[:-4] not in text for text in texts), texts
    assert "partial" in texts[1] and all("****" + PROVIDER_SECRET[-4:] in text for text in texts[:2]), texts
