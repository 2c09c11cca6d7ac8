"""The YAML config file's shape: the fields each entry may have, their types, and errors that name the path
inside the file (``routes[2].targets[0].provider``). Used by `routing.config_file` (import/export)."""

import os
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

REDACTED = "<redacted>"


class ConfigError(Exception):
    def __init__(self, source: str, path: str, problem: str):
        self.source, self.path, self.problem = source, path, problem
        super().__init__(f"{source}: {path or '(top level)'}: {problem}")


# --- a small schema checker that reports paths -----------------------------------------------------

_INT, _SIGNED_INT, _NUM, _STR, _BOOL = "int", "signed int", "number", "string", "bool"
PROVIDER_FIELDS = {
    "name": _STR, "kind": _STR, "base_url": _STR, "extra_headers": dict, "connect_timeout": _NUM,
    "read_timeout": _NUM, "enabled": _BOOL, "options": dict, "credentials": list,
}
CREDENTIAL_FIELDS = {
    "name": _STR, "secret": _STR, "max_inflight": _INT, "rpm": _INT, "tpm": _INT, "weight": _INT, "enabled": _BOOL,
}
ROUTE_FIELDS = {
    "model": _STR, "strategy": _STR, "priority": _SIGNED_INT, "enabled": _BOOL, "timeout": _NUM, "retry_budget": _INT,
    "targets": list, "aliases": list, "fallbacks": list, "queue_timeout": _NUM, "log_bodies": _BOOL,
}
TARGET_FIELDS = {"provider": _STR, "model": _STR, "weight": _INT, "tier": _INT}
TEAM_FIELDS = {
    "name": _STR, "models": list, "rpm": _INT, "tpm": _INT, "max_concurrency": _INT, "monthly_budget_usd": _NUM,
    "tokens": list,
}
TOKEN_FIELDS = {
    "name": _STR, "value": _STR, "models": list, "rpm": _INT, "tpm": _INT, "max_concurrency": _INT,
    "budget_usd": _NUM, "expires_at": _STR, "admin": _BOOL, "allowed_ips": list,
}


def _type_ok(value: Any, expected) -> bool:
    if expected == _INT:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if expected == _SIGNED_INT:  # a route's priority: lower numbers may go below zero
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == _NUM:
        return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    if expected == _STR:
        return isinstance(value, str)
    if expected == _BOOL:
        return isinstance(value, bool)
    return isinstance(value, expected)


_TYPE_NAMES = {dict: "a mapping", list: "a list", _INT: "a whole number >= 0", _SIGNED_INT: "a whole number",
               _NUM: "a number >= 0", _STR: "a string", _BOOL: "true or false"}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, problem: str):
        raise ConfigError(self.source, path, problem)

    def mapping(self, value: Any, path: str, fields: dict, required: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            self.fail(path, "must be a mapping")
        for key, item in value.items():
            if key not in fields:
                self.fail(_join(path, key), f"unknown field (allowed: {', '.join(fields)})")
            if item is not None and not _type_ok(item, fields[key]):
                self.fail(_join(path, key), f"must be {_TYPE_NAMES[fields[key]]}")
        for key in required:
            if value.get(key) in (None, ""):
                self.fail(_join(path, key), "is required")
        return value

    def items(self, value: Any, path: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, "must be a list")
        return value


def resolve_secret(raw: str, checker: Checker, path: str) -> tuple[str | None, str]:
    """Return (secret or None to keep the stored one, reference to remember for export)."""
    if raw == REDACTED:
        return None, ""
    if raw.startswith("env:"):
        name = raw[4:]
        if not os.environ.get(name):
            checker.fail(path, f"environment variable {name} is not set")
        return os.environ[name], raw
    if raw.startswith("file:"):
        try:
            return Path(raw[5:]).read_text().strip(), raw
        except OSError as exc:
            checker.fail(path, f"cannot read {raw[5:]}: {exc.strerror}")
    return raw, ""


def load_file(path: str) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read file: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(path, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    return data if data is not None else {}


def decimal_value(value, checker, path):
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        checker.fail(path, "must be a number")
