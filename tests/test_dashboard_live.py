"""The dashboard's live websocket: who may connect, who receives what, and health changes reaching admins."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from proxy import live_feed
from proxy.models import UsageRecord
from routing import health, services
from routing.models import HealthStatus
from tests.factories import make_world

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _close_thread_connections():
    """Consumers query from worker threads; close those connections at once so the test database can be dropped."""
    from django.db import connections

    connections.settings["default"]["CONN_MAX_AGE"] = 0


def _application():
    from ds2api_site.asgi import application

    return application


@database_sync_to_async
def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


async def _connect(user=None) -> tuple[WebsocketCommunicator, bool, int | None]:
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if user is not None:
        headers.append((b"cookie", (await _session_cookie(user)).encode()))
    communicator = WebsocketCommunicator(_application(), "/ws/live/", headers=headers)
    connected, code = await communicator.connect(timeout=5)
    return communicator, connected, code


@database_sync_to_async
def _rows(team_id: int, count: int, status: int = 200) -> list[UsageRecord]:
    return [
        UsageRecord.objects.create(team_id=team_id, token_id=None, client_protocol="openai_chat",
                                   client_model="gpt-test", status=status, input_tokens=3, output_tokens=4,
                                   latency_ms=120, credential_id=None)
        for _ in range(count)
    ]


async def _until(communicator: WebsocketCommunicator, kind: str) -> dict:
    while True:
        message = await communicator.receive_json_from(timeout=5)
        if message["type"] == kind:
            return message


async def test_anonymous_socket_is_refused():
    communicator, connected, code = await _connect(None)
    assert not connected
    assert code == 4401
    await communicator.disconnect()


async def test_a_member_gets_their_teams_counters_and_never_another_teams():
    world = await database_sync_to_async(make_world)()
    communicator, connected, _ = await _connect(world.user("member"))
    assert connected
    hello = await communicator.receive_json_from(timeout=5)
    assert hello == {"type": "hello", "admin": False, "teams": [world.team.pk]}

    # The other team's traffic first: if it leaked, it would arrive before ours.
    await live_feed.publish_usage(await _rows(world.other_team.pk, 5, status=500))
    await live_feed.publish_usage(await _rows(world.team.pk, 2))

    counters = await communicator.receive_json_from(timeout=5)
    assert counters["type"] == "counters" and counters["scope"] == f"team:{world.team.pk}"
    assert (counters["requests"], counters["errors"], counters["input_tokens"]) == (2, 0, 6)
    assert "by_credential" not in counters  # credentials are platform data
    log = await communicator.receive_json_from(timeout=5)
    assert log["type"] == "log" and {row["team_id"] for row in log["rows"]} == {world.team.pk}
    assert all("credential_id" not in row for row in log["rows"])
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_an_outsider_receives_nothing_of_the_team():
    world = await database_sync_to_async(make_world)()
    communicator, connected, _ = await _connect(world.user("outsider"))
    assert connected
    assert (await communicator.receive_json_from(timeout=5))["teams"] == [world.other_team.pk]
    await live_feed.publish_usage(await _rows(world.team.pk, 3))
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_an_admin_receives_totals_across_teams_with_credential_breakdown():
    world = await database_sync_to_async(make_world)()
    communicator, connected, _ = await _connect(world.user("superuser"))
    assert connected
    assert (await communicator.receive_json_from(timeout=5))["admin"] is True
    await _until(communicator, "health")  # the first snapshot
    rows = await _rows(world.team.pk, 2) + await _rows(world.other_team.pk, 1, status=429)
    await live_feed.publish_usage(rows)
    counters = await _until(communicator, "counters")
    assert (counters["scope"], counters["requests"], counters["errors"]) == ("all", 3, 1)
    log = await _until(communicator, "log")
    assert [row["id"] for row in log["rows"]] == [r.pk for r in rows]
    await communicator.disconnect()


@database_sync_to_async
def _credential(fake_url: str):
    provider = services.save_provider("fake-openai", kind="openai", base_url=fake_url + "/v1")
    return services.save_credential(provider, "acct-1", secret="sk-live-feed-test-9f3a")


async def test_a_health_change_reaches_a_connected_admin(fake):
    world = await database_sync_to_async(make_world)()
    credential = await _credential(fake.url)
    communicator, connected, _ = await _connect(world.user("superuser"))
    assert connected
    snapshot = await _until(communicator, "health")
    assert [(c["id"], c["status"]) for c in snapshot["credentials"]] == [(credential.pk, "ok")]

    # The routing layer's own write path (as a 429 or a probe would use it), from another thread.
    await database_sync_to_async(health.set_health)(credential.pk, HealthStatus.COOLING, error="rate limited",
                                           cooldown_seconds=30)
    update = await _until(communicator, "health")
    tile = update["credentials"][0]
    assert (tile["id"], tile["status"], tile["last_error"]) == (credential.pk, "cooling", "rate limited")
    assert tile["cooldown_until"] is not None
    assert "sk-live-feed-test-9f3a" not in str(update) and tile["masked"].endswith("9f3a")
    await communicator.disconnect()


async def test_members_do_not_receive_health(fake):
    world = await database_sync_to_async(make_world)()
    credential = await _credential(fake.url)
    communicator, connected, _ = await _connect(world.user("owner"))
    assert connected
    await communicator.receive_json_from(timeout=5)  # hello
    await database_sync_to_async(health.set_health)(credential.pk, HealthStatus.INVALID, error="bad key")
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_credentials_that_served_traffic_get_fresh_tiles(fake):
    world = await database_sync_to_async(make_world)()
    credential = await _credential(fake.url)
    communicator, connected, _ = await _connect(world.user("superuser"))
    assert connected
    await _until(communicator, "health")
    rows = await _rows(world.team.pk, 2)
    await database_sync_to_async(UsageRecord.objects.filter(pk__in=[r.pk for r in rows]).update)(
        credential_id=credential.pk)
    for r in rows:
        r.credential_id = credential.pk
    await live_feed.publish_usage(rows)
    counters = await _until(communicator, "counters")
    assert counters["by_credential"] == {str(credential.pk): 2}
    tiles = await _until(communicator, "health")  # in-flight and headroom, re-read after the traffic
    assert [t["id"] for t in tiles["credentials"]] == [credential.pk]
    await communicator.disconnect()
