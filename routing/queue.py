"""A fair first-in-first-out wait when every eligible credential of a route is busy.

One line per route (per pinned credential, for pinned requests) in each process. Only the head of a line
asks the shared limits for a slot; it retries as soon as this process releases any lease, and every
POLL_SECONDS for slots other replicas free. While a line is non-empty, newcomers join its back instead of
trying first, so nobody overtakes an earlier request of the same process.
"""

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

T = TypeVar("T")

POLL_SECONDS = 0.05


class QueueFull(Exception):
    pass


class _Waiter:
    __slots__ = ("turn", "kick")

    def __init__(self) -> None:
        self.turn = asyncio.Event()  # set when this waiter reaches the head
        self.kick = asyncio.Event()  # set when a lease was released: worth trying again now


class FairQueue:
    def __init__(self, max_waiting: int = 1000) -> None:
        self.max_waiting = max_waiting
        self._lines: dict[Hashable, deque[_Waiter]] = {}

    def waiting(self, key: Hashable) -> int:
        line = self._lines.get(key)
        return len(line) if line else 0

    @property
    def depth(self) -> int:
        """Requests waiting in this process, all lines together (for metrics and tests)."""
        return sum(len(line) for line in self._lines.values())

    def kick(self) -> None:
        """A lease was released in this process: let every head try again."""
        for line in self._lines.values():
            if line:
                line[0].kick.set()

    async def wait(self, key: Hashable, attempt: Callable[[], Awaitable[T | None]], timeout: float) -> T | None:
        """Wait in line, then call `attempt` until it returns a result or `timeout` seconds pass (None).

        `attempt` may raise to end the wait (e.g. a limit that waiting cannot fix).
        """
        line = self._lines.setdefault(key, deque())
        if len(line) >= self.max_waiting:
            raise QueueFull()
        me = _Waiter()
        line.append(me)
        deadline = time.monotonic() + timeout
        try:
            if line[0] is not me and not await _wait_event(me.turn, deadline):
                return None
            while True:
                me.kick.clear()
                result = await attempt()
                if result is not None:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                await _wait_event(me.kick, time.monotonic() + min(POLL_SECONDS, remaining))
        finally:
            was_head = line and line[0] is me
            line.remove(me)
            if not line:
                self._lines.pop(key, None)
            elif was_head:
                line[0].turn.set()


async def _wait_event(event: asyncio.Event, deadline: float) -> bool:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return event.is_set()
    try:
        await asyncio.wait_for(event.wait(), remaining)
    except TimeoutError:
        return event.is_set()
    return True
