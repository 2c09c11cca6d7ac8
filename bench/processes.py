"""Starting and stopping the benchmark's server processes (fake upstream, gateway, LiteLLM)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, name: str, cmd: list[str], port: int, env: dict | None = None, ready_path: str = "/healthz"):
        self.name, self.cmd, self.port, self.ready_path = name, cmd, port, ready_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = ROOT / "bench" / f".{name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> Server:
        handle = open(self.log, "wb")  # noqa: SIM115 (kept open for the process' lifetime)
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1).status_code < 500:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become ready in {timeout}s; see {self.log}")

    def pids(self) -> list[int]:
        """The server process and its children (uvicorn workers)."""
        if self.proc is None:
            return []
        out = subprocess.run(["pgrep", "-g", str(os.getpgid(self.proc.pid))], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def worker_rss_mb(self) -> list[float]:
        sizes = []
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        # With several workers the first process is a light supervisor; report the workers.
        return sorted(sizes)[1:] if len(sizes) > 1 else sizes

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(os.getpgid(self.proc.pid), signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(os.getpgid(self.proc.pid), signal.SIGKILL)


def python() -> str:
    return sys.executable
