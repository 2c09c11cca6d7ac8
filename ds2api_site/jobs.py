"""The one way ds2api declares a Celery task: retried with backoff on transient errors, logged without args.

Tasks are thin wrappers around service functions and idempotent, so a retry (or a redelivery after a
worker died, with acks_late) is always safe. Only infrastructure hiccups are retried: a bug or bad input
fails at once instead of looping.
"""

import time
from collections.abc import Callable

import orjson
import redis
from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,  # Postgres restarting, connection refused, serialization failure
    InterfaceError,  # a connection that died between tasks
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
    TimeoutError,
)


def background_task(name: str, **options) -> Callable:
    """`shared_task` with ds2api's retry policy: 2 s, 4 s, 8 s ... capped at 5 minutes, with jitter."""
    policy = {
        "autoretry_for": TRANSIENT_ERRORS,
        "retry_backoff": 2,
        "retry_backoff_max": 300,
        "retry_jitter": True,
        "max_retries": 8,
        **options,
    }
    return shared_task(name=name, **policy)


class JobProgress:
    """Where a long task reports how far it got, for the dashboard to show (a JSON value in Redis).

    Kept for a day after the last update. `claim()` makes starting a job idempotent: a second click on
    "rotate keys" while one is queued or running does not queue another, unless that one went silent
    (its worker died) for STALE_SECONDS.
    """

    TTL_SECONDS = 24 * 3600
    STALE_SECONDS = 600

    def __init__(self, job: str) -> None:
        self.job = job

    @property
    def key(self) -> str:
        return f"{settings.REDIS_PREFIX}:jobs:{self.job}"

    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)

    def claim(self, **fields) -> bool:
        """Mark the job queued unless it is already queued or running; True if this caller claimed it."""
        client = self._client()
        try:
            with client.pipeline() as pipe:
                pipe.watch(self.key)  # two clicks at once: only one claim wins
                current = pipe.get(self.key)
                if current is not None:
                    previous = orjson.loads(current)
                    fresh = time.time() - previous.get("updated", 0) < self.STALE_SECONDS
                    if previous.get("state") in ("queued", "running") and fresh:
                        return False
                pipe.multi()
                pipe.set(self.key, orjson.dumps({"state": "queued", "updated": time.time(), **fields}),
                         ex=self.TTL_SECONDS)
                pipe.execute()
                return True
        except redis.WatchError:
            return False
        finally:
            client.close()

    def update(self, **fields) -> None:
        client = self._client()
        try:
            current = client.get(self.key)
            merged = {**(orjson.loads(current) if current else {}), **fields, "updated": time.time()}
            client.set(self.key, orjson.dumps(merged, default=str), ex=self.TTL_SECONDS)
        finally:
            client.close()

    def read(self) -> dict | None:
        """The last reported state (`state`: queued, running, done or failed; counts), or None."""
        client = self._client()
        try:
            current = client.get(self.key)
        finally:
            client.close()
        return orjson.loads(current) if current else None
