"""A real Celery worker (not eager mode) in a subprocess, on the test database and this run's Redis prefix.

Tests using it need `django_db(transaction=True)`: the worker has its own connection and only sees
committed rows. Tasks are sent from the test process with `.delay()` and land on the same queue, because
both sides read DS2API_REDIS_PREFIX.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.db import connection

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def subprocess_database_url() -> str:
    """DATABASE_URL of the test database, for processes started by tests."""
    parts = urlsplit(settings.DATABASE_URL)
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


@contextmanager
def celery_worker(log_dir: Path, *, beat: bool = False, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start `celery -A ds2api_site worker` (with embedded beat if asked); yield its node name."""
    from ds2api_site.celery import app

    node = f"test-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    command = [sys.executable, "-m", "celery", "-A", "ds2api_site", "worker", "--pool", "solo", "--loglevel",
               "INFO", "--hostname", node, "--without-gossip", "--without-mingle"]
    if beat:
        command += ["--beat", "--schedule", str(log_dir / f"beat-{node}.db")]
    log_path = log_dir / f"worker-{node}.log"
    full_env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "DS2API_REDIS_PREFIX": settings.REDIS_PREFIX,
        "REDIS_URL": settings.REDIS_URL,
        "DS2API_ALLOW_PRIVATE_UPSTREAMS": "1",  # the fake upstream listens on 127.0.0.1
        **(env or {}),
    }
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO, env=full_env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[node], timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker did not start:\n{log_path.read_text()[-4000:]}")
        yield node
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True, and its children (a beat, server workers)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_until(probe: Callable[[], T], *, timeout: float = 60.0, interval: float = 0.1, what: str = "") -> T:
    """Poll `probe` until it returns something truthy; fail the test (not hang) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or probe}")
        time.sleep(interval)
