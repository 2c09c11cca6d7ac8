"""Security of the proxy path: SSRF (provider base URLs, DNS rebinding, redirects, image URLs), constant-time
token checks, and throttling plus auditing of repeated authentication failures.

DNS answers are faked by patching `socket.getaddrinfo` (the in-process gateway resolves through it), so no
test needs the network; every server involved listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import aiohttp
import aiohttp.resolver
import httpx
import pytest
import redis
from django.core.exceptions import ValidationError

from accounts.models import AuditEvent
from proxy import auth_throttle
from proxy.canonical import GatewayError
from proxy.image_fetch import fetch_image
from routing import services
from routing.selectors import credential_health
from routing.validators import validate_base_url
from tests.conftest import make_setup
from tests.servers import ServerThread

CHAT = "/v1/chat/completions"
_addresses = itertools.count(1)


def chat(gateway, token: str, model: str = "gpt-test", path: str = CHAT, **headers) -> httpx.Response:
    body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    auth = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(gateway.url + path, json=body, timeout=30,
                      headers={**auth, "anthropic-version": "2023-06-01", **headers})


@pytest.fixture
def fake_dns(monkeypatch):
    """Names in this table resolve to the given address; others as usual."""
    table: dict[str, str] = {}
    real = socket.getaddrinfo

    def lookup(host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name in table:
            address = table[name]
            if ":" in address:
                return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port or 0), 0, 0))]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    # the gateway's event loop may be uvloop, which resolves natively: fake aiohttp's resolver as well
    real_resolve = aiohttp.resolver.ThreadedResolver.resolve

    async def resolve(self, host, port=0, family=socket.AF_INET):
        if host not in table:
            return await real_resolve(self, host, port, family)
        address = table[host]
        return [{"hostname": host, "host": address, "port": port, "proto": 6, "flags": 0,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET}]

    monkeypatch.setattr(aiohttp.resolver.ThreadedResolver, "resolve", resolve)
    return table


def last_error_of(credential, timeout: float = 5.0) -> str:
    """The credential's last error once its health settlement has landed (it rides off the request path)."""
    deadline = time.monotonic() + timeout
    while not (error := credential_health([credential.id])[0]["last_error"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return error


def unique_name(label: str) -> str:
    # the gateway caches DNS answers for minutes: every test uses names of its own
    return f"{label}-{time.monotonic_ns()}.test"


# --- SSRF: provider base URLs -----------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/v1", "http://localhost/v1", "http://10.1.2.3/v1", "http://192.168.0.10/v1",
    "http://172.16.5.5/v1", "http://169.254.10.10/v1", "http://[::1]/v1", "http://[fd12::1]/v1",
    "http://0.0.0.0/v1", "http://[::ffff:127.0.0.1]/v1",
])
def test_private_base_urls_are_refused_unless_allowed(url):
    with pytest.raises(ValidationError, match="DS2API_ALLOW_PRIVATE_UPSTREAMS"):
        validate_base_url(url, allow_private=False)
    assert validate_base_url(url, allow_private=True)


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data", "http://metadata.google.internal/computeMetadata/v1",
    "http://[fd00:ec2::254]/", "http://100.100.100.200/", "http://169.254.170.2/v2/credentials",
    "http://[::ffff:169.254.169.254]/",
])
def test_cloud_metadata_is_refused_even_when_private_upstreams_are_allowed(url):
    for allow in (False, True):
        with pytest.raises(ValidationError, match="metadata"):
            validate_base_url(url, allow_private=allow)


def test_a_name_resolving_to_the_metadata_address_is_refused(fake_dns):
    name = unique_name("meta")
    fake_dns[name] = "169.254.169.254"
    with pytest.raises(ValidationError, match="cloud metadata"):
        validate_base_url(f"https://{name}/v1", allow_private=False)


def test_a_name_rebound_to_a_private_address_after_saving_is_refused_when_dialled(fake, gateway, settings, fake_dns):
    setup = make_setup(fake.url)
    settings.DS2API_ALLOW_PRIVATE_UPSTREAMS = False
    name = unique_name("rebind")
    fake_dns[name] = "93.184.216.34"  # public when the provider is saved...
    services.save_provider(setup.provider.name, kind="openai", base_url=f"http://{name}:{fake.port}/v1")
    fake_dns[name] = "127.0.0.1"  # ...and pointing inside when the gateway dials it
    response = chat(gateway, setup.token)
    assert response.status_code == 502 and response.json()["error"]["message"]
    assert fake.state.total_requests == 0
    last_error = last_error_of(setup.credentials[0])
    assert "private or loopback" in last_error and "does not connect" in last_error
    settings.DS2API_ALLOW_PRIVATE_UPSTREAMS = True  # the operator allows it: the same name now serves
    assert chat(gateway, setup.token).status_code == 200


def test_a_name_resolving_to_metadata_is_never_dialled_even_with_private_allowed(fake, gateway, fake_dns):
    setup = make_setup(fake.url)
    name = unique_name("meta-alias")
    fake_dns[name] = "169.254.169.254"
    services.save_provider(setup.provider.name, kind="openai", base_url=f"http://{name}/v1")  # not resolved now
    response = chat(gateway, setup.token)
    assert response.status_code == 502
    assert "cloud metadata" in last_error_of(setup.credentials[0])


def test_redirects_from_a_provider_are_not_followed(fake, gateway):
    async def redirector(scope, receive, send):
        await send({"type": "http.response.start", "status": 307,
                    "headers": [(b"location", (fake.url + scope["path"]).encode())]})
        await send({"type": "http.response.body", "body": b""})

    setup = make_setup(fake.url)
    with ServerThread(redirector) as server:
        services.save_provider(setup.provider.name, kind="openai", base_url=server.url + "/v1")
        response = chat(gateway, setup.token)
    assert response.status_code == 502 and "redirect" in response.json()["error"]["message"]
    assert fake.state.total_requests == 0  # the redirect target was never contacted


# --- SSRF: image URLs fetched for conversion -----------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def image_server(body: bytes = PNG, content_type: bytes = b"image/png", status: int = 200,
                 headers: tuple = (), length: bool = True):
    hits = []

    async def app(scope, receive, send):
        hits.append(scope["path"])
        extra = [(b"content-type", content_type), *headers]
        if length:
            extra.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": body})

    return ServerThread(app), hits


def fetch(url: str, **kwargs):
    return asyncio.run(fetch_image(url, **kwargs))


def test_image_urls_on_private_addresses_are_refused_unless_allowed(settings):
    server, hits = image_server()
    with server:
        settings.DS2API_ALLOW_PRIVATE_UPSTREAMS = False
        with pytest.raises(GatewayError, match="private or loopback") as refused:
            fetch(server.url + "/cat.png")
        assert refused.value.status == 400 and hits == []
        settings.DS2API_ALLOW_PRIVATE_UPSTREAMS = True
        assert fetch(server.url + "/cat.png?size=s") == (PNG, "image/png")


def test_image_urls_naming_metadata_are_refused_even_when_private_is_allowed(settings, fake_dns):
    settings.DS2API_ALLOW_PRIVATE_UPSTREAMS = True
    name = unique_name("img-meta")
    fake_dns[name] = "169.254.169.254"
    for url in (f"http://{name}/latest/meta-data", "http://169.254.169.254/latest/meta-data"):
        with pytest.raises(GatewayError, match="metadata"):
            fetch(url)


def test_image_fetch_follows_no_redirect_and_caps_the_size(settings):
    settings.DS2API_ALLOW_PRIVATE_UPSTREAMS = True
    target, target_hits = image_server()
    with target:
        redirect, _ = image_server(b"", status=302, headers=((b"location", (target.url + "/x.png").encode()),))
        with redirect:
            with pytest.raises(GatewayError, match="HTTP 302"):
                fetch(redirect.url + "/cat.png")
        assert target_hits == []
    big, _ = image_server(b"\0" * 5000)
    unsized, _ = image_server(b"\0" * 5000, length=False)  # no Content-Length: counted while reading
    with big, unsized:
        for server in (big, unsized):
            with pytest.raises(GatewayError, match="exceeds 1000 bytes"):
                fetch(server.url + "/big.png", max_bytes=1000)
        settings.DS2API_IMAGE_MAX_BYTES = 1000
        with pytest.raises(GatewayError, match="exceeds 1000 bytes"):
            fetch(big.url + "/big.png")


def test_image_fetch_wants_http_and_an_image(settings):
    settings.DS2API_ALLOW_PRIVATE_UPSTREAMS = True
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x.png", "gopher://127.0.0.1/"):
        with pytest.raises(GatewayError, match="http"):
            fetch(url)
    page, _ = image_server(b"<html>secret admin page</html>", content_type=b"text/html")
    with page:
        with pytest.raises(GatewayError, match="did not return an image"):
            fetch(page.url + "/admin")


def test_local_models_fetch_images_through_the_guard(settings, fake_dns):
    from proxy.local_models import images

    settings.DS2API_ALLOW_PRIVATE_UPSTREAMS = True
    name = unique_name("vlm-meta")
    fake_dns[name] = "169.254.169.254"
    with pytest.raises(GatewayError, match="metadata"):
        images._fetch(f"http://{name}/latest/meta-data/iam/security-credentials/")


# --- gateway tokens ----------------------------------------------------------------------------------

def test_token_digests_are_compared_in_constant_time(db):
    from accounts import tokens
    from proxy.auth import authenticate
    from routing.snapshot import build_snapshot

    setup = make_setup("http://127.0.0.1:9")
    near_miss = setup.token[:-1] + ("x" if setup.token[-1] != "x" else "y")
    scope = {"headers": [(b"authorization", f"Bearer {near_miss}".encode())], "client": ("198.51.100.1", 1)}
    with mock.patch.object(tokens.hmac, "compare_digest", wraps=hmac.compare_digest) as compare:
        with pytest.raises(GatewayError, match="invalid gateway token"):
            authenticate(scope, build_snapshot())
    assert compare.call_count == 1  # the near-miss token has the right prefix: its digest was compared


def new_address() -> str:
    return f"203.0.113.{next(_addresses) % 250 + 1}"


@pytest.fixture
def throttled(settings):
    settings.DS2API_AUTH_MAX_FAILURES = 5
    return settings


def wait_for_audit(address: str, timeout: float = 5.0) -> list[AuditEvent]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = list(AuditEvent.objects.filter(action="auth.token_failed", ip=address))
        if events:
            return events
        time.sleep(0.05)
    return []


def test_repeated_auth_failures_from_one_address_get_429_in_the_clients_protocol(fake, gateway, throttled):
    setup = make_setup(fake.url)
    address, other = new_address(), new_address()
    forwarded = {"x-forwarded-for": address}
    wrong = setup.token[:-4] + "zzzz"
    for _ in range(5):
        assert chat(gateway, wrong, **forwarded).status_code == 401
    refused = chat(gateway, wrong, **forwarded)
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 61
    assert refused.json()["error"]["type"] and "too many failed authentication" in refused.json()["error"]["message"]
    anthropic = chat(gateway, wrong, path="/v1/messages", **forwarded)
    assert anthropic.status_code == 429 and anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "rate_limit_error"
    # the address is refused outright for the rest of the minute, a valid token included
    assert chat(gateway, setup.token, **forwarded).status_code == 429
    # other addresses are not affected
    assert chat(gateway, setup.token, **{"x-forwarded-for": other}).status_code == 200


def test_auth_failures_are_audited_in_batches_without_the_token(fake, gateway, settings):
    settings.DS2API_AUTH_MAX_FAILURES = 100
    setup = make_setup(fake.url)
    address = new_address()
    wrong = setup.token[:-4] + "zzzz"
    tokens = [wrong] * 19 + [""]
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda t: chat(gateway, t, **{"x-forwarded-for": address}).status_code, tokens))
    assert statuses == [401] * 20
    deadline = time.monotonic() + 10
    while sum(e.details["count"] for e in wait_for_audit(address)) < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    events = wait_for_audit(address)
    assert sum(e.details["count"] for e in events) == 20
    assert len(events) <= 4  # one event per address and flush, never one per failure
    reasons: dict = {}
    for event in events:
        for reason, count in event.details["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
        assert event.details["prefixes"] == [setup.token[:12]] or event.details["prefixes"] == []
        assert wrong not in str(event.details) and setup.token not in str(event.details)
    assert reasons == {"invalid": 19, "missing": 1}


def test_a_token_used_from_a_foreign_address_is_refused_and_audited_for_its_team(fake, gateway, throttled):
    from accounts import services as account_services

    setup = make_setup(fake.url)
    bound = account_services.issue_token(setup.team, "office-only", allowed_ips=["10.0.0.0/8"]).plaintext
    address = new_address()
    refused = chat(gateway, bound, **{"x-forwarded-for": address})
    assert refused.status_code == 403 and refused.json()["error"]["message"]
    event = wait_for_audit(address)[0]
    assert event.team_id == setup.team.id and event.details["reasons"] == {"address_not_allowed": 1}
    assert event.details["prefixes"] == [bound[:12]]


def test_failures_seen_by_other_replicas_count_too(fake, gateway, throttled):
    setup = make_setup(fake.url)
    address = new_address()
    client = redis.Redis.from_url(throttled.REDIS_URL)
    window = int(time.time() // auth_throttle.WINDOW_SECONDS)
    try:
        client.set(f"{throttled.REDIS_PREFIX}:rt:authfail:{window}:{address}", 4, ex=120)  # four elsewhere
        assert chat(gateway, "ds2-not-a-real-token-at-all", **{"x-forwarded-for": address}).status_code == 401
        deadline = time.monotonic() + 5
        while chat(gateway, setup.token, **{"x-forwarded-for": address}).status_code != 429:
            assert time.monotonic() < deadline, "the shared count was never learnt"
            time.sleep(0.1)
    finally:
        client.close()


def test_the_throttle_can_be_turned_off(fake, gateway, settings):
    settings.DS2API_AUTH_MAX_FAILURES = 0
    setup = make_setup(fake.url)
    address = new_address()
    for _ in range(8):
        assert chat(gateway, "ds2-wrong", **{"x-forwarded-for": address}).status_code == 401
    assert chat(gateway, setup.token, **{"x-forwarded-for": address}).status_code == 200


def test_health_probes_never_dial_metadata_either(fake, gateway, fake_dns):
    from routing.health_probe import probe_cheaply
    from routing.probes import probe_credential

    setup = make_setup(fake.url)
    name = unique_name("probe-meta")
    fake_dns[name] = "169.254.169.254"
    services.save_provider(setup.provider.name, kind="openai", base_url=f"http://{name}:{fake.port}/v1")
    credential = setup.credentials[0]
    credential.refresh_from_db()
    for result in (probe_cheaply(credential, timeout=5), probe_credential(credential, timeout=5)):
        assert not result.ok and "cloud metadata" in result.message
    fake_dns[name] = "127.0.0.1"  # the same name pointing at the fake: the probe reaches it
    assert probe_cheaply(credential, timeout=5).ok
