"""Run a few long-lived child processes as one: prefixed output, shared fate, graceful stop.

Each child runs in its own session, so a Ctrl-C in the terminal reaches only the supervisor, which then
asks every child to stop once (SIGTERM to the child, which stops its own workers) and, past a grace
period, kills whatever is left of each child's process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

POLL_SECONDS = 0.2
MAX_SETTLE_SECONDS = 10.0


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: Sequence[str]


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        env: Mapping[str, str],
        cwd: Path,
        out: TextIO = sys.stdout,
        grace_seconds: float = 20.0,
    ) -> None:
        self.specs, self.env, self.cwd, self.out = list(specs), dict(env), cwd, out
        self.grace_seconds = grace_seconds
        self.children: dict[str, subprocess.Popen] = {}
        self._pumps: list[threading.Thread] = []
        self._write_lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._force = False
        self._last_output = time.monotonic()
        self._width = max((len(spec.name) for spec in self.specs), default=0)

    # --- output ---------------------------------------------------------------------------------

    def say(self, name: str, line: str) -> None:
        with self._write_lock:
            self._last_output = time.monotonic()
            self.out.write(f"{name:<{self._width}} | {line}\n")
            self.out.flush()

    def _pump(self, name: str, stream) -> None:
        for raw in iter(stream.readline, b""):
            self.say(name, raw.decode(errors="replace").rstrip("\r\n"))
        stream.close()

    # --- lifecycle --------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            if self._stop_requested.is_set():
                self._force = True  # a second Ctrl-C: do not wait for graceful shutdown
            self._stop_requested.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def request_stop(self) -> None:
        self._stop_requested.set()

    def start(self) -> None:
        for spec in self.specs:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
                list(spec.argv), cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            )
            self.children[spec.name] = process
            pump = threading.Thread(target=self._pump, args=(spec.name, process.stdout), daemon=True)
            pump.start()
            self._pumps.append(pump)

    def run(
        self,
        *,
        ready: Callable[[], bool] | None = None,
        on_ready: Callable[[], None] | None = None,
        settle_seconds: float = 1.0,
    ) -> int:
        """Supervise until a stop is requested (returns 0) or a child exits (stops the rest, returns non-zero).

        `ready` is polled until it first returns True; `on_ready` then runs once the children's start-up
        chatter has paused for `settle_seconds` (or after MAX_SETTLE_SECONDS), so what it prints is not
        buried under their banners.
        """
        ready_at = None if ready is not None else time.monotonic()
        announced = on_ready is None
        while True:
            if self._stop_requested.wait(POLL_SECONDS):
                self.stop_all()
                return 0
            for name, process in self.children.items():
                code = process.poll()
                if code is not None:
                    self.say(name, f"exited with code {code}; stopping the others")
                    self.stop_all()
                    return code if code > 0 else 1
            if ready_at is None and ready is not None and ready():
                ready_at = time.monotonic()
            if not announced and ready_at is not None:
                now = time.monotonic()
                if now - self._last_output >= settle_seconds or now - ready_at >= MAX_SETTLE_SECONDS:
                    announced = True
                    on_ready()

    def stop_all(self) -> None:
        alive = {name: p for name, p in self.children.items() if p.poll() is None}
        for name, process in alive.items():
            self.say(name, "stopping")
            _signal(process, signal.SIGTERM, group=False)
        deadline = time.monotonic() + self.grace_seconds
        for _name, process in alive.items():
            while process.poll() is None and time.monotonic() < deadline and not self._force:
                time.sleep(0.05)
        for name, process in self.children.items():
            # Also catches workers the child left behind in its group.
            if process.poll() is None:
                self.say(name, f"did not stop within {self.grace_seconds:.0f}s; killing it")
            _signal(process, signal.SIGKILL, group=True)
            process.wait()
        for pump in self._pumps:
            pump.join(timeout=2)


def _signal(process: subprocess.Popen, signum: int, *, group: bool) -> None:
    try:
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
    except (ProcessLookupError, PermissionError):
        pass
