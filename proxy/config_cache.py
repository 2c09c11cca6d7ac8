"""The proxy's copy of the configuration snapshot, kept fresh without touching the database per request.

Reloads happen (in a worker thread) when this process made a change, when another process announces one
over Redis pub/sub, or when the snapshot is older than DS2API_SNAPSHOT_REFRESH_SECONDS (safety net).
Requests keep using the previous snapshot while a reload runs.
"""

import asyncio
import logging
import time

from django.conf import settings

from proxy.canonical import GatewayError
from proxy.db import run_db
from routing.config_events import channel_name, local_generation
from routing.pubsub import follow
from routing.snapshot import EMPTY, Snapshot, build_snapshot

log = logging.getLogger(__name__)


class ConfigCache:
    def __init__(self) -> None:
        self.snapshot: Snapshot = EMPTY
        self._generation = -1
        self._remote_dirty = False
        self._reloading: asyncio.Task | None = None
        self._listener: asyncio.Task | None = None
        self._loaded = asyncio.Event()

    async def get(self) -> Snapshot:
        if not self._loaded.is_set():
            await self._reload_once()
            return self.snapshot
        if (
            self._generation != local_generation()
            or self._remote_dirty
            or time.time() - self.snapshot.loaded_at > settings.DS2API_SNAPSHOT_REFRESH_SECONDS
        ):
            if self._generation != local_generation():
                # A change made by this very process: the caller expects to see it now.
                await self._reload_once()
            else:
                self._start_reload()
        return self.snapshot

    async def _reload_once(self) -> None:
        task = self._start_reload()
        await asyncio.shield(task)

    def _start_reload(self) -> asyncio.Task:
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self._reload())
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(
                follow(channel_name(), self._changed, on_subscribed=self._changed_maybe, name="config change listener"))
        return self._reloading

    async def _reload(self) -> None:
        generation = local_generation()
        self._remote_dirty = False
        try:
            self.snapshot = await run_db(build_snapshot)
            self._generation = generation
            self._loaded.set()
        except Exception as exc:
            if not self._loaded.is_set():
                # No snapshot yet (a worker started while Postgres is down): a retryable 503, not a crash.
                log.warning("config load failed (%s: %s); answering 503 until it succeeds", type(exc).__name__, exc)
                raise GatewayError("overloaded", "the gateway cannot read its configuration yet; retry shortly") from exc
            log.exception("config reload failed; serving the previous snapshot")

    async def _changed(self, data: bytes) -> None:
        self._remote_dirty = True

    def _changed_maybe(self) -> None:
        self._remote_dirty = True  # (re)subscribed: announcements made while we were not listening are lost

    async def close(self) -> None:
        for task in (self._listener, self._reloading):
            if task and not task.done():
                task.cancel()
