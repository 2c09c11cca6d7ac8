"""The local development stack behind `make run`: secrets, Postgres/Redis discovery, process supervision.

`python -m ds2api_site.devstack <command>`; see `__main__.py` for the commands.
"""

from ds2api_site.devstack.secret_files import ensure_secrets

__all__ = ["ensure_secrets"]
