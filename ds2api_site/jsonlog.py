"""A JSON log formatter: one object per line, for log shippers.

Structured fields go in `extra={"fields": {...}}` and land at the top level of the object, next to the
time, level, logger and message. Imported by the LOGGING setting, so it must not touch Django models.
"""

import logging
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
