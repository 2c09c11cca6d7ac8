"""Serve the gateway in production: `python -m ds2api_site.serve` (used by deploy/Procfile and compose).

uvicorn with DS2API_WORKERS processes on HOST:PORT, serving the whole ASGI router (proxy, dashboard,
websockets). With more than one worker, Prometheus multiprocess mode is switched on (an empty
PROMETHEUS_MULTIPROC_DIR, wiped at start as prometheus-client requires) so /metrics sums every worker of
this replica whichever one answers the scrape. Behind a reverse proxy, set FORWARDED_ALLOW_IPS (read by
uvicorn) to its address so client addresses come from X-Forwarded-For.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from ds2api_site.env import env, env_int


def prepare_metrics_dir(workers: int, environ: dict) -> str | None:
    """Make PROMETHEUS_MULTIPROC_DIR empty (creating one if needed) when several workers share a replica."""
    path = environ.get("PROMETHEUS_MULTIPROC_DIR")
    if workers <= 1 and not path:
        return None
    if not path:
        path = environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ds2api-metrics-")
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for child in directory.iterdir():  # files of a previous run would be summed in as if alive
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    return path


def command(workers: int, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "ds2api_site.asgi:application",
        "--host", host, "--port", str(port), "--workers", str(workers),
        "--lifespan", "on", "--proxy-headers",
        # Proxied requests are logged as JSON lines by ds2api itself (ds2api.requests).
        "--no-access-log",
    ]


def main() -> None:
    workers = max(1, env_int("DS2API_WORKERS", 1))
    prepare_metrics_dir(workers, os.environ)
    argv = command(workers, env("HOST", "127.0.0.1"), env_int("PORT", 8000))
    os.execv(argv[0], argv)  # noqa: S606 - replaces this process with the server (signals reach it directly)


if __name__ == "__main__":
    main()
