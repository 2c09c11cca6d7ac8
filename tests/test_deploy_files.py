"""The scale-out deployment: compose file, Procfile, Dockerfile, nginx and the serve launcher.

No container engine runs here, so the compose file is checked by parsing and reading what it says; the
serve launcher is run for real with several workers to show /metrics sums them.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ds2api_site import serve
from tests.celery_worker import stop_process_group, subprocess_database_url, wait_until
from tests.conftest import make_setup, wait_for_usage_rows

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
APP_SERVICES = ("migrate", "gateway", "worker", "beat")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_runs_replicas_workers_and_one_beat_on_one_postgres_and_one_redis(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "gateway", "worker", "beat", "nginx"}
    assert services["gateway"]["deploy"]["replicas"] == "${DS2API_GATEWAY_REPLICAS:-3}"
    assert services["worker"]["deploy"]["replicas"] == "${DS2API_WORKER_REPLICAS:-1}"
    assert services["beat"]["deploy"]["replicas"] == 1
    assert services["gateway"]["command"] == ["python", "-m", "ds2api_site.serve"]
    assert services["gateway"]["environment"]["DS2API_WORKERS"] == "${DS2API_WORKERS:-2}"
    assert services["worker"]["command"][:4] == ["celery", "-A", "ds2api_site", "worker"]
    assert "${DS2API_CELERY_CONCURRENCY:-4}" in services["worker"]["command"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "ds2api_site", "beat"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["DATABASE_URL"].endswith("@postgres:5432/ds2api"), name
        assert env["REDIS_URL"] == "redis://redis:6379/0", name
        assert services[name]["image"] == services["gateway"]["image"], name
    # Migrations run once, before any process serves.
    for name in ("gateway", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    # Only nginx is published; replicas share one service name behind it.
    assert [s for s, spec in services.items() if spec.get("ports")] == ["nginx"]
    assert "server gateway:8000 resolve" in (DEPLOY / "nginx.conf").read_text()


def test_compose_keeps_secrets_out_of_the_file(compose):
    for name in APP_SERVICES:
        env = compose["services"][name]["environment"]
        for secret in ("DJANGO_SECRET_KEY", "DS2API_ENCRYPTION_KEYS", "DS2API_METRICS_TOKEN"):
            assert secret not in env and env[f"{secret}_FILE"].startswith("/run/secrets/"), (name, secret)
        assert "${POSTGRES_PASSWORD:?" in env["DATABASE_URL"]
    assert set(compose["secrets"]) == {"django_secret_key", "encryption_keys", "metrics_token"}
    assert (DEPLOY / ".gitignore").read_text().split() == ["secrets/"]


def test_every_knob_the_deployment_uses_is_documented(compose):
    readme = (ROOT / "README.md").read_text()
    text = (DEPLOY / "compose.yaml").read_text() + (DEPLOY / "Procfile").read_text()
    knobs = set(re.findall(r"\$\{(DS2API_\w+|LOG_\w+|POSTGRES_\w+|PORT|ALLOWED_HOSTS|CSRF_TRUSTED_ORIGINS|SECURE_COOKIES)", text))
    assert knobs >= {"DS2API_GATEWAY_REPLICAS", "DS2API_WORKERS", "DS2API_CELERY_CONCURRENCY"}
    missing = sorted(k for k in knobs if f"`{k}`" not in readme)
    assert not missing, missing
    operations = (ROOT / "docs" / "operations.md").read_text()
    for topic in ("## Sizing", "## Backups", "## Key rotation", "## Upgrading", "Redis down", "Postgres down"):
        assert topic in operations


def test_nginx_streams_unbuffered_and_hides_metrics():
    conf = (DEPLOY / "nginx.conf").read_text()
    assert "proxy_buffering off;" in conf
    assert re.search(r"location = /metrics \{\s*return 404;", conf)
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf  # overwritten, not appended


def test_the_procfile_names_every_process_and_they_exist():
    processes = dict(
        line.split(":", 1) for line in (DEPLOY / "Procfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert set(processes) == {"release", "web", "worker", "beat"}
    assert processes["web"].strip() == "python -m ds2api_site.serve"
    assert processes["worker"].split()[:4] == ["celery", "-A", "ds2api_site", "worker"]
    assert processes["beat"].split()[:4] == ["celery", "-A", "ds2api_site", "beat"]
    assert "migrate" in processes["release"]
    importlib.import_module("ds2api_site.serve")


def test_every_scheduled_job_is_a_registered_task(settings):
    from ds2api_site.celery import app

    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled <= set(app.tasks), scheduled - set(app.tasks)
    assert {"ds2api.probe_credentials", "ds2api.roll_up_usage", "ds2api.prune_usage"} <= scheduled


def test_the_image_holds_the_application_and_nothing_secret():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (\S+)", dockerfile, flags=re.M)
    assert copied == ["pyproject.toml", "manage.py", "ds2api_site", "accounts", "routing", "proxy", "templates"]
    assert re.search(r"^USER ds2api$", dockerfile, flags=re.M)
    assert 'CMD ["python", "-m", "ds2api_site.serve"]' in dockerfile


def test_serve_wipes_the_metrics_directory_only_for_several_workers(tmp_path):
    environ: dict[str, str] = {}
    assert serve.prepare_metrics_dir(1, environ) is None and "PROMETHEUS_MULTIPROC_DIR" not in environ
    stale = tmp_path / "counter_123.db"
    stale.write_bytes(b"old")
    environ = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    assert serve.prepare_metrics_dir(4, environ) == str(tmp_path) and not stale.exists()
    created = serve.prepare_metrics_dir(2, {})
    assert created and Path(created).is_dir()
    argv = serve.command(3, "0.0.0.0", 9000)
    assert argv[argv.index("--workers") + 1] == "3" and argv[argv.index("--port") + 1] == "9000"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_metrics_sum_every_worker_process_of_a_replica(fake, tmp_path):
    setup = make_setup(fake.url)
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "DS2API_WORKERS": "2", "PORT": str(port),
           "HOST": "127.0.0.1", "DS2API_ALLOW_PRIVATE_UPSTREAMS": "1",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen([sys.executable, "-m", "ds2api_site.serve"], cwd=ROOT, env=env, stdout=log_file,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return httpx.get(base + "/healthz").status_code == 200
            except httpx.TransportError:
                assert server.poll() is None, log_path.read_text()
                return False

        wait_until(up, what="the server")
        metrics_dir = tmp_path / "metrics"

        def processes_counted() -> set[str]:  # pids with request counters: those that served a request
            return {f.stem.rsplit("_", 1)[-1] for f in metrics_dir.glob("counter_*.db")}

        body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
        sent = 0
        while len(processes_counted()) < 2:  # new connections: the kernel spreads them over both processes
            assert sent < 200, "one process took every connection"
            with httpx.Client() as client:
                reply = client.post(base + "/v1/chat/completions", json=body,
                                    headers={"authorization": f"Bearer {setup.token}"})
            assert reply.status_code == 200, reply.text
            sent += 1
        wait_for_usage_rows(sent)

        def scraped_total() -> float:
            with httpx.Client() as client:
                text = client.get(base + "/metrics").text
            return sum(sample.value for family in text_string_to_metric_families(text)
                       for sample in family.samples if sample.name == "ds2api_requests_total")

        # Each process applies its tallies within half a second; then every scrape, whichever process answers,
        # counts the requests of both (either alone would report fewer than were sent).
        deadline = time.monotonic() + 10
        while scraped_total() != sent and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(6):
            assert scraped_total() == sent
    finally:
        stop_process_group(server)
