"""The dashboard's live websocket: forwards typed messages the signed-in user may see.

A platform admin joins the admin group (totals across teams, per-credential breakdowns) and follows
credential health; everyone else joins one group per team they belong to. Scoping is decided here, once,
at connect time; `proxy.live_feed` only ever sends a team's data to that team's group.
"""

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from accounts.models import Membership
from proxy.live_feed import GROUP_ADMIN, health_channel, health_ids, health_message, team_group

log = logging.getLogger(__name__)

# Application close code (4000-4999): the socket was refused because nobody is signed in.
CLOSE_UNAUTHENTICATED = 4401
# Health changes arrive in bursts (a 429 storm cools many keys at once): gather them for a moment and
# re-read the tiles once.
HEALTH_COALESCE_SECONDS = 0.2
# In-flight counts and provider headroom change with every request but announce nothing: credentials that
# just served traffic get their tiles re-read, at most this often.
BUSY_REFRESH_SECONDS = 1.0


@database_sync_to_async
def _scope_for(user) -> tuple[bool, list[int]]:
    if user.is_superuser:
        return True, []
    return False, list(Membership.objects.filter(user=user).values_list("team_id", flat=True))


class LiveConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.joined: list[str] = []
        self.health_task: asyncio.Task | None = None
        self.busy_ids: set[int] = set()
        self.busy_task: asyncio.Task | None = None
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
        if is_admin:
            ready = asyncio.Event()
            self.health_task = asyncio.create_task(self._follow_health(ready))
            try:
                await asyncio.wait_for(ready.wait(), 5)
            except TimeoutError:
                pass  # the first snapshot below still arrives; later changes once Redis answers
            await self.send_json(await database_sync_to_async(health_message)())

    async def disconnect(self, code: int) -> None:
        for task in (self.health_task, self.busy_task):
            if task is not None:
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
                self.busy_ids.update(int(i) for i in payload["by_credential"])
                if self.busy_task is None or self.busy_task.done():
                    self.busy_task = asyncio.create_task(self._refresh_busy())

    async def _refresh_busy(self) -> None:
        await asyncio.sleep(BUSY_REFRESH_SECONDS)
        ids, self.busy_ids = sorted(self.busy_ids), set()
        await self.send_json(await database_sync_to_async(health_message)(ids))

    async def _follow_health(self, ready: asyncio.Event) -> None:
        """Forward credential health changes, re-reading the tiles they name, until the socket closes."""
        delay = 1.0
        while True:
            client = aioredis.Redis.from_url(settings.REDIS_URL)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(health_channel())
                    ready.set()
                    delay = 1.0
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                        if message is None:
                            continue
                        ids = set(health_ids(message["data"]))
                        await asyncio.sleep(HEALTH_COALESCE_SECONDS)
                        while (more := await pubsub.get_message(ignore_subscribe_messages=True)) is not None:
                            ids.update(health_ids(more["data"]))
                        if ids:
                            await self.send_json(await database_sync_to_async(health_message)(sorted(ids)))
            except (aioredis.RedisError, OSError) as exc:
                ready.set()  # the page still works, without live health, while Redis is away
                log.warning("live health feed lost Redis (%s); retrying in %.0fs", exc, delay)
            finally:
                await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
