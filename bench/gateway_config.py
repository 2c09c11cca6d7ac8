"""The benchmark's gateway configuration: a fresh database, routes to the fake upstream, one token."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from urllib.parse import urlsplit

import psycopg

from bench.processes import ROOT, python

BENCH_TOKEN = "ds2-benchmark-token-0123456789abcdefghij"
UPSTREAM_KEY = "sk-bench-upstream-0001"

CONFIG = """
providers:
  - name: fake-openai
    kind: openai
    base_url: {fake}/v1
    credentials:
      - name: bench-1
        secret: env:BENCH_UPSTREAM_KEY
  - name: fake-anthropic
    kind: anthropic
    base_url: {fake}
    credentials:
      - name: bench-1
        secret: env:BENCH_UPSTREAM_KEY
routes:
  - model: bench-model
    targets: [{{provider: fake-openai, model: bench}}]
  - model: bench-long
    targets: [{{provider: fake-openai, model: long}}]
  - model: bench-claude
    targets: [{{provider: fake-anthropic, model: claude-bench}}]
  - model: bench-claude-long
    targets: [{{provider: fake-anthropic, model: long}}]
teams:
  - name: bench
    tokens:
      - name: bench
        value: env:BENCH_TOKEN
"""


def ensure_database(url: str) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = url.replace(parts.path, "/postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def prepare_gateway_database(env: dict, fake_url: str) -> None:
    ensure_database(env["DATABASE_URL"])
    full_env = {**os.environ, **env, "BENCH_TOKEN": BENCH_TOKEN, "BENCH_UPSTREAM_KEY": UPSTREAM_KEY}
    subprocess.run([python(), "manage.py", "migrate", "-v0"], cwd=ROOT, env=full_env, check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(CONFIG.format(fake=fake_url))
    subprocess.run([python(), "manage.py", "gateway", "import", handle.name, "--prune"], cwd=ROOT, env=full_env,
                   check=True, stdout=subprocess.DEVNULL)


def run_json_module(module: str, args: list[str], env: dict, database_suffix: str) -> dict:
    """Run `python -m <module> <args>` against its own migrated database (the bench URL + suffix) and return
    the JSON it prints; for measurements that fill large tables of their own."""
    env = {**os.environ, **env, "DATABASE_URL": env["DATABASE_URL"] + database_suffix}
    ensure_database(env["DATABASE_URL"])
    subprocess.run([python(), "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    done = subprocess.run([python(), "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout)
