"""Stored request/response bodies: off by default, per-route switch, redacted, team-scoped, pruned."""

import base64
import os
import re
from datetime import timedelta

import anthropic
import openai
import pytest
import yaml
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Role
from proxy import rollup_writer, stored_bodies
from proxy.models import StoredBody, UsageRecord, UsageRollup
from proxy.redact import redact_json
from proxy.tasks import prune_usage
from routing import services
from routing.config_file import export_config, import_config
from routing.models import Route
from tests.celery_worker import wait_until
from tests.conftest import make_setup, wait_for_usage_rows
from tests.factories import MembershipFactory, SuperUserFactory, TeamFactory
from tests.media import TINY_PNG_B64
from tests.usage_rows import settle_usage

PROVIDER_KEY = "sk-proj-Q1w2E3r4T5y6U7i8O9p0-LEAK"
ANTHROPIC_KEY = "sk-ant-api03-abcdefghijklmnopqrstuv-LEAK"
GOOGLE_KEY = "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5pLEAK"
# A few kilobytes of image bytes: what a client sends inline, never what the log should keep.
BIG_IMAGE_B64 = base64.b64encode(os.urandom(3000)).decode()


def member_client(team) -> Client:
    client = Client()
    client.force_login(MembershipFactory(team=team, role=Role.MEMBER).user)
    return client


def outsider_client() -> Client:
    client = Client()
    client.force_login(MembershipFactory(team=TeamFactory(name="outsiders"), role=Role.OWNER).user)
    return client


def keep_bodies(model: str = "gpt-test") -> None:
    services.update_route(Route.objects.get(model=model), log_bodies=True)


def wait_for_bodies(count: int) -> list[StoredBody]:
    rows = wait_until(lambda: StoredBody.objects.count() >= count and list(StoredBody.objects.order_by("id")),
                      timeout=10, interval=0.02, what=f"{count} stored bodies")
    assert len(rows) == count
    return rows


def assert_no_secret(row: StoredBody, *secrets: str) -> None:
    stored = row.request_body + row.response_body
    for secret in secrets:
        assert secret not in stored


def openai_sdk(gateway, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)


# --- through the gateway ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_bodies_are_off_by_default(fake, gateway):
    setup = make_setup(fake.url)
    reply = openai_sdk(gateway, setup.token).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "nothing to keep"}])
    assert reply.choices[0].message.content == "echo: nothing to keep"
    [row] = wait_for_usage_rows(1)
    settle_usage(gateway.proxy_app)  # the batch that wrote the row would have written the bodies too
    assert Route.objects.get(model="gpt-test").log_bodies is False and not StoredBody.objects.exists()
    html = member_client(setup.team).get(f"/requests/{row.pk}/").content.decode()
    assert "bodies are off for this route" in html and "nothing to keep" not in html


@pytest.mark.django_db(transaction=True)
def test_plain_request_is_stored_redacted_and_shown_to_its_team_only(fake, gateway):
    setup = make_setup(fake.url)
    keep_bodies()
    text = f"hello there gateway, my keys are {PROVIDER_KEY} {GOOGLE_KEY} and {setup.token}"
    reply = openai_sdk(gateway, setup.token).chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{BIG_IMAGE_B64}"}},
        ]}],
        extra_body={"metadata": {"api_key": "plain-secret-value", "Authorization": "Bearer abcdefgh12345678"}},
    )
    assert PROVIDER_KEY in reply.choices[0].message.content  # the fake echoes it: the response is redacted too
    [usage_row] = wait_for_usage_rows(1)
    [body] = wait_for_bodies(1)

    assert body.request_id == usage_row.request_id and body.team_id == setup.team.id and not body.streamed
    assert "hello there gateway" in body.request_body and "echo: hello there gateway" in body.response_body
    assert_no_secret(body, PROVIDER_KEY, GOOGLE_KEY, setup.token, "plain-secret-value", "abcdefgh12345678",
                     BIG_IMAGE_B64[:64])
    assert "[redacted …LEAK]" in body.request_body and "[redacted …LEAK]" in body.response_body
    assert "[image/png omitted: 3000 bytes]" in body.request_body
    assert not body.truncated

    detail = f"/requests/{usage_row.pk}/"
    html = member_client(setup.team).get(detail).content.decode()
    assert "hello there gateway" in html and "echo: hello there gateway" in html and PROVIDER_KEY not in html
    assert outsider_client().get(detail).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_streamed_text_and_tool_calls_are_stored_joined(fake, gateway):
    setup = make_setup(fake.url, model="gpt-tool")
    services.save_route("gpt-chat", [services.TargetSpec(setup.provider)], log_bodies=True)
    keep_bodies("gpt-tool")
    sdk = openai_sdk(gateway, setup.token)
    chunks = list(sdk.chat.completions.create(
        model="gpt-chat", stream=True, messages=[{"role": "user", "content": f"one two {ANTHROPIC_KEY} three"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("echo: one two")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    list(sdk.chat.completions.create(model="gpt-tool", stream=True, tools=tools,
                                     messages=[{"role": "user", "content": "weather?"}]))
    text_body, tool_body = wait_for_bodies(2)

    assert text_body.streamed and tool_body.streamed
    assert '"text": "echo: one two [redacted …LEAK] three"' in text_body.response_body
    assert_no_secret(text_body, ANTHROPIC_KEY)
    assert '"name": "get_weather"' in tool_body.response_body and "Paris" in tool_body.response_body
    assert '"finish_reason": "tool_calls"' in tool_body.response_body

    usage_row = UsageRecord.objects.get(request_id=text_body.request_id)
    html = member_client(setup.team).get(f"/requests/{usage_row.pk}/").content.decode()
    assert "echo: one two" in html and "streamed" in html
    assert outsider_client().get(f"/requests/{usage_row.pk}/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_anthropic_image_blocks_are_never_stored(fake, gateway):
    setup = make_setup(fake.url, model="claude-test")
    keep_bodies("claude-test")
    sdk = anthropic.Anthropic(base_url=gateway.url, api_key=setup.token, max_retries=0)
    with sdk.messages.stream(model="claude-test", max_tokens=50, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": TINY_PNG_B64}},
        {"type": "text", "text": "what is this"},
    ]}]) as stream:
        assert "[images: 1]" in stream.get_final_text()
    [body] = wait_for_bodies(1)
    assert TINY_PNG_B64 not in body.request_body and "[image/png omitted: 70 bytes]" in body.request_body
    assert "what is this" in body.request_body


# --- redaction and truncation ----------------------------------------------------------------------


def test_redaction_masks_secret_fields_and_inline_media_of_every_protocol():
    body = {
        "headers": {"Authorization": "Bearer sk-abcdefghijklmnop1234", "x-api-key": "short"},
        "api_key": "anything-at-all", "client_secret": 12345678, "max_tokens": 300,
        "contents": [{"parts": [{"inlineData": {"mimeType": "image/jpeg", "data": BIG_IMAGE_B64}}]}],
        "input": [{"type": "input_audio", "input_audio": {"data": BIG_IMAGE_B64, "format": "wav"}}],
        "note": f"a key {GOOGLE_KEY} and an id 3f2a9c",
    }
    safe = redact_json(body)
    assert safe["headers"] == {"Authorization": "[redacted …1234]", "x-api-key": "[redacted]"}
    assert safe["api_key"] == "[redacted]" and safe["client_secret"] == "[redacted]" and safe["max_tokens"] == 300
    assert safe["contents"][0]["parts"][0]["inlineData"]["data"] == "[image/jpeg omitted: 3000 bytes]"
    assert safe["input"][0]["input_audio"]["data"] == "[base64 data omitted: 3000 bytes]"
    assert safe["note"] == "a key [redacted …LEAK] and an id 3f2a9c"


def test_bodies_are_cut_at_the_size_limit_and_flagged(settings):
    settings.DS2API_BODY_MAX_BYTES = 200
    capture = stored_bodies.BodyCapture("r1", 1, b'{"messages": [{"role": "user", "content": "' + b"word " * 200 + b'"}]}')
    capture.add_events([])
    row = stored_bodies.to_row(capture, settings.DS2API_BODY_MAX_BYTES)
    assert row.truncated and len(row.request_body.encode()) <= 200 and row.request_body.startswith("{")
    small = stored_bodies.to_row(stored_bodies.BodyCapture("r2", 1, b'{"a": 1}', response=b'{"b": 2}'), 200)
    assert not small.truncated and '"b": 2' in small.response_body


# --- retention -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_retention_prunes_old_bodies_and_keeps_usage_rows_and_rollups(settings):
    settings.DS2API_BODY_RETENTION_DAYS = 7
    now = timezone.now()
    old_at, new_at = now - timedelta(days=10), now - timedelta(hours=1)
    for request_id, at in (("old", old_at), ("new", new_at)):
        UsageRecord.objects.create(created_at=at, request_id=request_id, team_id=1, client_protocol="openai_chat",
                                   client_model="gpt-a", status=200, input_tokens=5)
        StoredBody.objects.create(created_at=at, request_id=request_id, team_id=1, request_body="{}")
    rollup_writer.roll_range(old_at - timedelta(days=1), now)
    rollups_before = UsageRollup.objects.count()

    report = prune_usage()  # the hourly Celery task, run in place
    assert report["proxy.storedbody"] == 1
    assert list(StoredBody.objects.values_list("request_id", flat=True)) == ["new"]
    assert UsageRecord.objects.count() == 2 and UsageRollup.objects.count() == rollups_before
    assert prune_usage()["proxy.storedbody"] == 0


# --- the route switch: YAML, management API, dashboard editor ---------------------------------------


ROUTE_YAML = """
providers:
  - name: openai
    kind: openai
    base_url: http://127.0.0.1:9/v1
routes:
  - model: gpt-logged
    log_bodies: true
    targets: [{provider: openai}]
  - model: gpt-quiet
    targets: [{provider: openai}]
"""


@pytest.mark.django_db
def test_the_route_switch_round_trips_through_yaml(settings):
    settings.DS2API_ALLOW_PRIVATE_UPSTREAMS = True
    import_config(yaml.safe_load(ROUTE_YAML))
    assert dict(Route.objects.values_list("model", "log_bodies")) == {"gpt-logged": True, "gpt-quiet": False}
    exported = {r["model"]: r for r in export_config()["routes"]}
    assert exported["gpt-logged"]["log_bodies"] is True and "log_bodies" not in exported["gpt-quiet"]

    Route.objects.all().delete()
    import_config(yaml.safe_load(yaml.safe_dump(export_config() | {"routes": list(exported.values())})))
    assert Route.objects.get(model="gpt-logged").log_bodies is True

    turned_off = yaml.safe_load(ROUTE_YAML)
    turned_off["routes"][0]["log_bodies"] = False
    import_config(turned_off)
    assert Route.objects.get(model="gpt-logged").log_bodies is False

    broken = yaml.safe_load(ROUTE_YAML)
    broken["routes"][0]["log_bodies"] = "yes please"
    with pytest.raises(Exception, match=r"routes\[0\]\.log_bodies"):
        import_config(broken)


@pytest.mark.django_db
def test_the_route_switch_through_the_api_and_the_route_editor():
    provider = services.save_provider("openai", kind="openai", base_url="https://api.openai.com/v1")
    admin = SuperUserFactory(username="platform-admin")
    api = APIClient()
    api.force_login(admin)
    created = api.post("/api/routes/", {"model": "gpt-4o", "targets": [{"provider": provider.pk}]}, format="json")
    assert created.status_code == 201 and created.json()["log_bodies"] is False
    rid = created.json()["id"]
    assert api.patch(f"/api/routes/{rid}/", {"log_bodies": True}, format="json").json()["log_bodies"] is True
    assert Route.objects.get(pk=rid).log_bodies is True

    page = Client()
    page.force_login(admin)
    assert 'name="log_bodies"' in page.get(f"/routes/{rid}/").content.decode()
    form = {"strategy": "round_robin", "priority": "0", "retry_budget": "2", "enabled": "on",
            "targets-TOTAL_FORMS": "1", "targets-INITIAL_FORMS": "1", "targets-0-provider": str(provider.pk),
            "targets-0-weight": "1", "targets-0-tier": "0"}
    response = page.post(f"/routes/{rid}/", form)
    assert response.status_code == 302, re.findall(r"errorlist.{0,200}", response.content.decode())  # unticked: off
    assert Route.objects.get(pk=rid).log_bodies is False
    assert page.post(f"/routes/{rid}/", form | {"log_bodies": "on"}).status_code == 302
    assert Route.objects.get(pk=rid).log_bodies is True
    assert "bodies stored" in page.get("/routes/").content.decode()
