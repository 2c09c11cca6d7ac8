"""The one way ds2api declares a Celery task: retried with backoff on transient errors, logged without args.

Tasks are thin wrappers around service functions and idempotent, so a retry (or a redelivery after a
worker died, with acks_late) is always safe. Only infrastructure hiccups are retried: a bug or bad input
fails at once instead of looping.
"""

from collections.abc import Callable

import redis
from celery import shared_task
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
