"""Usage recording off the request path: rows are buffered in memory and written in batches.

A slow or briefly unavailable database never slows the proxy: the buffer keeps rows (up to
DS2API_USAGE_BUFFER_MAX) and the flusher retries. `flush()` runs at shutdown. Each batch also stamps the
tokens it saw with their last use (one UPDATE per batch, never one per request). Stored bodies of routes
with `log_bodies` (proxy/stored_bodies.py) ride along in a sibling buffer, written after their usage rows.
"""

import asyncio
import logging

from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, InterfaceError, connection
from django.db.models import Q
from django.utils import timezone

from accounts import budgets, pricing
from accounts.models import GatewayToken
from proxy import live_feed, stored_bodies
from proxy.db import run_db
from proxy.models import UsageRecord
from proxy.stored_bodies import BodyCapture

log = logging.getLogger(__name__)

# Bodies are optional and can be large (a request may carry images): while the database is away, keep at most
# this many bytes of them; beyond, new ones are dropped (the usage rows are not).
BODY_BUFFER_MAX_BYTES = 64 * 1024 * 1024


_TABLE = UsageRecord._meta.db_table
_FIELDS = [f for f in UsageRecord._meta.concrete_fields if not f.primary_key]
_ATTNAMES = [f.attname for f in _FIELDS]
_COPY_SQL = f"COPY {_TABLE} (id, {', '.join(f.column for f in _FIELDS)}) FROM STDIN"
_IDS_SQL = "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)"
# Table and column names come from the model, values are parameters.
_RETRY_SQL = (f"INSERT INTO {_TABLE} (id, {', '.join(f.column for f in _FIELDS)}) "  # noqa: S608
              f"VALUES ({', '.join(['%s'] * (len(_FIELDS) + 1))}) ON CONFLICT (id) DO NOTHING")
_DEFAULTS = {f.attname: f.get_default() for f in _FIELDS if f.attname != "created_at"}
_COUNTS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "latency_ms")
_COUNT_MAX = 2**31 - 1  # PostgreSQL integer


class PendingUsage:
    """A usage row waiting in the buffer: UsageRecord's columns as plain attributes (`pk` once written).

    Building a Django model instance per request cost ~15 us on the hot path; the writer COPYs these as they
    are, and everything that reads stored rows (pricing, budgets, the live feed) only reads attributes.
    """

    __slots__ = ("pk", *_ATTNAMES)

    def __init__(self, fields: dict) -> None:
        for name, default in _DEFAULTS.items():
            setattr(self, name, fields.get(name, default))
        for name in _COUNTS:  # a provider's impossible count is recorded as the nearest the column holds
            value = getattr(self, name)
            if not 0 <= value <= _COUNT_MAX:
                setattr(self, name, min(max(value, 0), _COUNT_MAX))
        self.created_at = fields.get("created_at") or timezone.now()
        self.pk = None


def _values(row) -> list:
    """A row's columns in the order of _COPY_SQL and _RETRY_SQL (id first)."""
    return [row.pk, *[getattr(row, name) for name in _ATTNAMES]]


def _insert(rows: list[PendingUsage]) -> None:
    """COPY the batch in: several times cheaper than an INSERT built by the ORM, which at a few thousand
    requests/s was a tenth of the gateway's CPU. Ids come from the table's sequence first, so the rows
    carry their primary keys afterwards (the live request log links to them).

    A row keeps its id across attempts: when a batch comes back after a failed write (which may have been
    stored all the same, e.g. the commit went through but its answer was lost), it is inserted skipping ids
    already present, so no request is ever counted twice."""
    fresh = [row for row in rows if row.pk is None]
    with connection.cursor() as cursor:
        if fresh:
            cursor.execute(_IDS_SQL, [_TABLE, len(fresh)])
            for (pk,), row in zip(cursor.fetchall(), fresh, strict=True):
                row.pk = pk
        if len(fresh) == len(rows):
            # psycopg's COPY, under Django's error translation: a dropped connection must surface as Django's
            # DatabaseError (the flusher keeps the rows) and mark the connection for replacement
            with connection.wrap_database_errors, cursor.cursor.copy(_COPY_SQL) as copy:
                for row in rows:
                    copy.write_row(_values(row))
        else:
            cursor.executemany(_RETRY_SQL, [_values(row) for row in rows])


def _insert_each(rows: list[PendingUsage]) -> list[PendingUsage]:
    """After the database refused a batch for its content: every row on its own, dropping (and logging) only
    those it refuses, e.g. a provider reporting a negative or absurd token count. Returns the rows stored."""
    stored = []
    with connection.cursor() as cursor:
        for row in rows:
            try:
                cursor.execute(_RETRY_SQL, _values(row))
            except (DataError, IntegrityError) as exc:
                log.error("usage row of request %s refused by the database, dropped (%s)", row.request_id, exc)
                continue
            stored.append(row)
    return stored


def _write(rows: list[PendingUsage]) -> None:
    pricing.apply_costs(rows)
    try:
        _insert(rows)
    except (DataError, IntegrityError):  # retrying the batch would fail forever: keep all the rows it can
        rows = _insert_each(rows)
    budgets.add_spend(rows)  # after the rows are stored: a rebuilt counter already includes them
    try:
        _mark_tokens_used(rows)
    except DatabaseError as exc:  # the rows are stored: raising would make the flusher write them twice
        log.warning("could not record tokens' last use (%s)", exc)


def _mark_tokens_used(rows: list[PendingUsage]) -> None:
    """Stamp every token of the batch with the batch's latest request time, in one UPDATE (never backwards)."""
    token_ids = {row.token_id for row in rows if row.token_id is not None}
    if not token_ids:
        return
    latest = max(row.created_at for row in rows)
    GatewayToken.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=latest), pk__in=token_ids).update(
        last_used_at=latest)


class UsageRecorder:
    def __init__(self) -> None:
        self._buffer: list[PendingUsage] = []
        self._bodies: list[BodyCapture] = []
        self._body_bytes = 0
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._flushing = asyncio.Lock()
        self.dropped = 0

    @property
    def depth(self) -> int:
        return len(self._buffer)

    def add(self, **fields) -> None:
        limit = getattr(settings, "DS2API_USAGE_BUFFER_MAX", 100_000)
        if len(self._buffer) >= limit:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("usage buffer full (%d rows): %d rows dropped so far", limit, self.dropped)
            return
        self._buffer.append(PendingUsage(fields))
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        if len(self._buffer) >= settings.DS2API_USAGE_BATCH_SIZE:
            self._wake.set()

    def add_body(self, capture: BodyCapture) -> None:
        """Queue a request's bodies; call right after `add()` of its usage row, so one flush writes both."""
        size = capture.size
        if self._body_bytes + size > BODY_BUFFER_MAX_BYTES:
            log.warning("stored-bodies buffer full: the bodies of request %s are not kept", capture.request_id)
            return
        capture.created_at = timezone.now()
        self._bodies.append(capture)
        self._body_bytes += size

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), settings.DS2API_USAGE_FLUSH_SECONDS)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> int:
        async with self._flushing:
            rows, self._buffer = self._buffer, []
            if rows:
                try:
                    await run_db(_write, rows)
                except Exception as exc:  # whatever failed, the rows are kept: they are what bills a request
                    if isinstance(exc, DatabaseError | InterfaceError):
                        log.warning("usage write failed (%s); keeping %d rows to retry", exc, len(rows))
                    else:
                        log.exception("usage write failed unexpectedly; keeping %d rows to retry", len(rows))
                    self._buffer[:0] = rows
                    await asyncio.sleep(1.0)
                    return 0
                live_feed.schedule_usage(rows)  # the dashboard's live counters and request log
            await self._flush_bodies()
            return len(rows)

    async def _flush_bodies(self) -> None:
        """Separate from the rows' write, so a failure here never makes the rows be written twice."""
        bodies, self._bodies, self._body_bytes = self._bodies, [], 0
        if not bodies:
            return
        try:
            await run_db(stored_bodies.write, bodies)
        except (DatabaseError, InterfaceError) as exc:
            log.warning("stored-bodies write failed (%s); keeping %d to retry", exc, len(bodies))
            self._bodies[:0] = bodies
            self._body_bytes += sum(capture.size for capture in bodies)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.flush()
