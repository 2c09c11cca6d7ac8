"""The local development stack behind `make run`: secrets, Postgres/Redis discovery, process supervision.

`python -m ds2api_site.devstack <command>`; see `__main__.py` for the commands.
"""

from ds2api_site.devstack.secret_files import ensure_secrets

__all__ = ["ServiceError", "ensure_secrets"]


class ServiceError(RuntimeError):
    """Postgres or Redis was named, found or embedded but cannot be used; the message says what to do."""
