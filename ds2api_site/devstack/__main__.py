"""`python -m ds2api_site.devstack <command>`

  secrets  generate DJANGO_SECRET_KEY / DS2API_ENCRYPTION_KEYS into the data folder when none is configured
  env      find (or start) Postgres and Redis and print `export DATABASE_URL=... REDIS_URL=...` lines;
           use as `eval "$(.venv/bin/python -m ds2api_site.devstack env)"`. Embedded servers keep running.
  run      what `make run` does: secrets, services, migrate, first admin, then web + worker + beat
  stop     stop the embedded Postgres/Redis under the data folder, if they run
"""

import os
import shlex
import sys

from ds2api_site.devstack import ServiceError
from ds2api_site.devstack.embedded import EmbeddedPostgres, EmbeddedRedis
from ds2api_site.devstack.secret_files import ensure_secrets
from ds2api_site.devstack.services import DATABASE_NAME, ensure_services
from ds2api_site.env import DATA_DIR


def cmd_env() -> int:
    # Only the export lines go to stdout, so that `eval` sees nothing else.
    services = ensure_services(os.environ, data_dir=DATA_DIR, out=sys.stderr)
    for name, value in services.env().items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def cmd_stop() -> int:
    for server in (EmbeddedRedis(DATA_DIR), EmbeddedPostgres(DATA_DIR, DATABASE_NAME)):
        if server.running():
            print(f"Stopping embedded {server.service} ({server.directory})", file=sys.stderr)
            server.stop()
    return 0


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "secrets"
    try:
        if command == "secrets":
            ensure_secrets()
            return 0
        if command == "env":
            return cmd_env()
        if command == "stop":
            return cmd_stop()
        if command == "run":
            from ds2api_site.devstack.stack import run

            return run()
    except ServiceError as exc:
        print(f"ds2api: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the supervisor took over (e.g. during migrate)
        return 130
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
