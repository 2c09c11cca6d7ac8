"""The live websocket re-checks access while it is open: a user who loses it is disconnected with 4403."""

import pytest
from channels.db import database_sync_to_async

from accounts.models import Membership
from proxy import consumers
from tests.factories import make_world
from tests.test_dashboard_live import _connect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _quick_recheck(monkeypatch):
    from django.db import connections

    connections.settings["default"]["CONN_MAX_AGE"] = 0  # consumers query from worker threads
    monkeypatch.setattr(consumers, "ACCESS_RECHECK_SECONDS", 0.05)


async def _closed_with(communicator) -> int:
    while True:
        message = await communicator.receive_output(timeout=5)
        if message["type"] == "websocket.close":
            return message["code"]


@database_sync_to_async
def _leave(user, team) -> None:
    Membership.objects.filter(user=user, team=team).delete()


@database_sync_to_async
def _demote(user) -> None:
    user.is_superuser = False
    user.save(update_fields=["is_superuser"])


async def test_a_member_removed_from_the_team_is_disconnected():
    world = await database_sync_to_async(make_world)()
    member = world.user("member")
    communicator, connected, _ = await _connect(member)
    assert connected
    assert (await communicator.receive_json_from(timeout=5))["teams"] == [world.team.pk]
    assert await communicator.receive_nothing(timeout=0.3)  # still a member: several re-checks pass quietly

    await _leave(member, world.team)
    assert await _closed_with(communicator) == consumers.CLOSE_FORBIDDEN
    await communicator.disconnect()


async def test_an_admin_who_is_no_longer_one_is_disconnected():
    world = await database_sync_to_async(make_world)()
    admin = world.user("superuser")
    communicator, connected, _ = await _connect(admin)
    assert connected
    assert (await communicator.receive_json_from(timeout=5))["admin"] is True

    await _demote(admin)
    assert await _closed_with(communicator) == consumers.CLOSE_FORBIDDEN
    await communicator.disconnect()
