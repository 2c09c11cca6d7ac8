"""A first-come, first-served concurrency cap for one local model.

Requests beyond the cap wait in arrival order, like requests waiting for a busy credential; a slot
is handed directly to the next waiter on release, so a newcomer can never overtake the queue.
"""

from __future__ import annotations

import asyncio
from collections import deque


class FifoGate:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.peak_running = 0
        self.peak_waiting = 0
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    async def acquire(self) -> None:
        if self.running < self.limit and not self._waiters:
            self._take()
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.peak_waiting = max(self.peak_waiting, self.waiting)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as we gave up: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def _take(self) -> None:
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)

    def release(self) -> None:
        self.running -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)
                return
