"""Announcing configuration changes so every gateway process reloads its in-process snapshot.

Writes call `announce_change()`; after the transaction commits it bumps a local generation counter (the
same process sees the change on its next request) and publishes on the Redis channel that the other
processes subscribe to.
"""

import logging
import threading

import redis
from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)

_generation = 0
_lock = threading.Lock()


def channel_name() -> str:
    return f"{settings.REDIS_PREFIX}:config-changed"


def local_generation() -> int:
    return _generation


def _bump_and_publish() -> None:
    global _generation
    with _lock:
        _generation += 1
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.publish(channel_name(), b"1")
        finally:
            client.close()
    except redis.RedisError as exc:
        # Other processes still pick the change up on their safety-net timer.
        log.warning("could not announce a config change over Redis: %s", exc)


def announce_change() -> None:
    transaction.on_commit(_bump_and_publish)
