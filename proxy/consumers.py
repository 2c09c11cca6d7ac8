"""The dashboard's live websocket: forwards typed messages the signed-in user may see.

A platform admin joins the admin group (totals across teams, per-credential breakdowns) and follows
credential health; everyone else joins one group per team they belong to. Scoping is decided here at
connect time, and re-checked every ACCESS_RECHECK_SECONDS: a user who lost that access (removed from a team,
no longer an admin, deactivated) is disconnected with 4403, and the page's reconnect gets the new scope.
`proxy.live_feed` only ever sends a team's data to that team's group.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model

from accounts.models import Membership
from proxy.live_feed import GROUP_ADMIN, health_channel, health_ids, health_message, team_group
from routing.pubsub import follow

# Application close codes (4000-4999): nobody is signed in; the user lost access to what the socket carries.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
ACCESS_RECHECK_SECONDS = 30.0
# Health changes arrive in bursts (a 429 storm cools many keys at once): gather them for a moment and
# re-read the tiles once.
HEALTH_COALESCE_SECONDS = 0.2
# In-flight counts and provider headroom change with every request but announce nothing: credentials that
# just served traffic get their tiles re-read, at most this often.
BUSY_REFRESH_SECONDS = 1.0


def _scope_of(user) -> tuple[bool, list[int]]:
    if user.is_superuser:
        return True, []
    return False, list(Membership.objects.filter(user=user).values_list("team_id", flat=True))


@database_sync_to_async
def _scope_for(user) -> tuple[bool, list[int]]:
    return _scope_of(user)


@database_sync_to_async
def _still_allowed(user_id: int, is_admin: bool, team_ids: list[int]) -> bool:
    """Whether the user may still see everything the socket joined at connect."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return False
    now_admin, now_teams = _scope_of(user)
    return now_admin if is_admin else now_admin or set(team_ids) <= set(now_teams)


class _TileRefresh:
    """Credential ids collected for a while, then their tiles re-read and sent once."""

    def __init__(self, delay: float, send: Callable[[list[int]], Awaitable[None]]) -> None:
        self.delay, self.send = delay, send
        self.ids: set[int] = set()
        self.task: asyncio.Task | None = None

    def add(self, ids: Iterable[int]) -> None:
        self.ids.update(ids)
        if self.ids and (self.task is None or self.task.done()):
            self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        await asyncio.sleep(self.delay)
        ids, self.ids = sorted(self.ids), set()
        await self.send(ids)


class LiveConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.joined: list[str] = []
        self.tasks: list[asyncio.Task | None] = []
        self.health = _TileRefresh(HEALTH_COALESCE_SECONDS, self._send_tiles)
        self.busy = _TileRefresh(BUSY_REFRESH_SECONDS, self._send_tiles)
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        is_admin, team_ids = await _scope_for(user)
        self.joined = [GROUP_ADMIN] if is_admin else [team_group(t) for t in team_ids]
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello", "admin": is_admin, "teams": team_ids})
        self.tasks.append(asyncio.create_task(self._recheck_access(user.pk, is_admin, team_ids)))
        if is_admin:
            ready = asyncio.Event()
            self.tasks.append(asyncio.create_task(follow(
                health_channel(), self._health_changed, on_subscribed=ready.set,
                on_lost=ready.set,  # the page still works, without live health, while Redis is away
                name="live health feed")))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), 5)  # else the snapshot below still arrives
            await self.send_json(await database_sync_to_async(health_message)())

    async def disconnect(self, code: int) -> None:
        for task in (*self.tasks, self.health.task, self.busy.task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def live_message(self, event: dict) -> None:
        for payload in event["payloads"]:
            await self.send_json(payload)
            if payload.get("by_credential"):
                self.busy.add(int(i) for i in payload["by_credential"])

    async def _health_changed(self, data: bytes) -> None:
        self.health.add(health_ids(data))

    async def _send_tiles(self, ids: list[int]) -> None:
        await self.send_json(await database_sync_to_async(health_message)(ids))

    async def _recheck_access(self, user_id: int, is_admin: bool, team_ids: list[int]) -> None:
        while True:
            await asyncio.sleep(ACCESS_RECHECK_SECONDS)
            if not await _still_allowed(user_id, is_admin, team_ids):
                await self.close(code=CLOSE_FORBIDDEN)
                return
