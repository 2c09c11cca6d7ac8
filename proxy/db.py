"""Running Django ORM work from the event loop: in a worker thread, with stale connections recycled."""

import asyncio
from collections.abc import Callable
from typing import TypeVar

from django.db import close_old_connections

T = TypeVar("T")


def _with_fresh_connection(fn: Callable[..., T], *args) -> T:
    close_old_connections()
    try:
        return fn(*args)
    finally:
        close_old_connections()


async def run_db(fn: Callable[..., T], *args) -> T:
    return await asyncio.to_thread(_with_fresh_connection, fn, *args)
