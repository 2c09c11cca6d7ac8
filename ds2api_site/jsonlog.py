"""A JSON log formatter: one object per line, for log shippers.

Structured fields go in `extra={"fields": {...}}` and land at the top level of the object, next to the
time, level, logger and message. Imported by the LOGGING setting, so it must not touch Django models.
"""

import logging
import threading
import time
from datetime import UTC, datetime

import orjson

_RESERVED = frozenset(("ts", "level", "logger", "message"))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if not isinstance(fields, dict):
            fields = {}
        elif not _RESERVED.isdisjoint(fields):
            fields = {k: v for k, v in fields.items() if k not in _RESERVED}
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **fields,
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class BatchingStreamHandler(logging.StreamHandler):
    """A StreamHandler that writes its lines in batches: one write per batch instead of a write and a flush
    per line, which on the proxy's hot path (a line per request) was a system call per request.

    A line waits at most `interval` seconds (a background thread writes what is pending); a full batch
    (`capacity` lines), a WARNING or worse, `flush()` and logging's shutdown at exit write at once.
    """

    def __init__(self, stream=None, interval: float = 0.2, capacity: int = 256) -> None:
        super().__init__(stream)
        self.interval, self.capacity = interval, capacity
        self._pending: list[str] = []
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held (Handler.handle)
        try:
            self._pending.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        if len(self._pending) >= self.capacity or record.levelno >= logging.WARNING:
            self._write_pending()
            return
        if self._writer is None or not self._writer.is_alive():
            self._writer = threading.Thread(target=self._write_periodically, name="log-batches", daemon=True)
            self._writer.start()
        self._wake.set()

    def flush(self) -> None:
        with self.lock:
            self._write_pending()

    def _write_pending(self) -> None:
        if self._pending:
            lines, self._pending = "".join(self._pending), []
            try:
                self.stream.write(lines)
                self.stream.flush()
            except (OSError, ValueError):  # stdout closed or gone: logging must never break the caller
                pass

    def _write_periodically(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.interval)  # gather the lines of the next `interval` seconds into this write
            self._wake.clear()
            self.flush()
