"""Login throttling: after N failed sign-ins for one (IP, username) pair, that pair is locked for M seconds.

Counters live in Redis so every dashboard process shares them and they expire on their own. The key
holds a digest of the username, never the name itself, so Redis does not collect guessed user names.
A Redis outage fails open (sign-in keeps working, unthrottled) and is logged: locking every
administrator out because a cache is down would be worse than a brief window without throttling.
"""

import hashlib
import logging
from dataclasses import dataclass

import redis
from django.conf import settings

log = logging.getLogger(__name__)

DEFAULT_MAX_FAILURES = 5
DEFAULT_LOCK_SECONDS = 15 * 60


@dataclass(frozen=True)
class ThrottleState:
    locked: bool
    retry_after: int  # seconds until the lock lifts (0 when not locked)


def _limits() -> tuple[int, int]:
    return (
        getattr(settings, "DS2API_LOGIN_MAX_FAILURES", DEFAULT_MAX_FAILURES),
        getattr(settings, "DS2API_LOGIN_LOCK_SECONDS", DEFAULT_LOCK_SECONDS),
    )


def _key(ip: str, username: str) -> str:
    who = hashlib.sha256(f"{ip}\0{username.strip().lower()}".encode()).hexdigest()[:32]
    return f"{settings.REDIS_PREFIX}:login-failures:{who}"


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def check(ip: str, username: str) -> ThrottleState:
    max_failures, _ = _limits()
    try:
        client = _client()
        try:
            pipe = client.pipeline()
            pipe.get(_key(ip, username))
            pipe.ttl(_key(ip, username))
            count, ttl = pipe.execute()
        finally:
            client.close()
    except redis.RedisError as exc:
        log.warning("login throttle unavailable (%s); not throttling", exc)
        return ThrottleState(False, 0)
    if count is not None and int(count) >= max_failures:
        return ThrottleState(True, max(int(ttl), 1))
    return ThrottleState(False, 0)


def record_failure(ip: str, username: str) -> ThrottleState:
    """Count one failed attempt; the window restarts with every failure, so a steady guesser stays locked."""
    max_failures, lock_seconds = _limits()
    try:
        client = _client()
        try:
            pipe = client.pipeline()
            pipe.incr(_key(ip, username))
            pipe.expire(_key(ip, username), lock_seconds)
            count, _ = pipe.execute()
        finally:
            client.close()
    except redis.RedisError as exc:
        log.warning("login throttle unavailable (%s); failure not counted", exc)
        return ThrottleState(False, 0)
    if int(count) >= max_failures:
        return ThrottleState(True, lock_seconds)
    return ThrottleState(False, 0)


def clear(ip: str, username: str) -> None:
    try:
        client = _client()
        try:
            client.delete(_key(ip, username))
        finally:
            client.close()
    except redis.RedisError as exc:
        log.warning("login throttle unavailable (%s); counter not cleared", exc)
