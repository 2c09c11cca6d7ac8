"""Type checks for inbound request fields; each failure names the offending field (`param`)."""

from typing import Any

from proxy.canonical import GatewayError

MAX_TOKENS_CEILING = 10_000_000


def _bad(param: str, problem: str) -> GatewayError:
    return GatewayError("invalid_request", f"{param} {problem}", param=param)


def require_dict(value: Any, param: str) -> dict:
    if not isinstance(value, dict):
        raise _bad(param, "must be an object")
    return value


def require_list(value: Any, param: str, *, non_empty: bool = False) -> list:
    if not isinstance(value, list):
        raise _bad(param, "must be an array")
    if non_empty and not value:
        raise _bad(param, "must not be empty")
    return value


def require_str(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(param, "must be a non-empty string")
    return value


def check_bool(value: Any, param: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise _bad(param, "must be a boolean")
    return value


def check_number(value: Any, param: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _bad(param, f"must be a number between {low} and {high}")
    return float(value)


def check_positive_int(value: Any, param: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TOKENS_CEILING:
        raise _bad(param, f"must be a whole number between 1 and {MAX_TOKENS_CEILING}")
    return value


def check_string_list(value: Any, param: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _bad(param, "must be a string or an array of strings")
    return value
