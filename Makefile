# Every command a developer or CI needs; the README calls these targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit test-integration lint format clean system-deps bench bench-deps soak

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "predictq needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/predictq up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/pytest

test-unit: install
	$(BIN)/pytest -m "not integration"

test-integration: install
	$(BIN)/pytest -m integration

# Debian packages some tests drive; they skip (fail under CI=true) without them.
SYSTEM_TOOLS := docker-compose chromium
system-deps:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# Speed figures beside a no-model floor and the textbook app (not part of `make test`): loopback
# only, about 15 minutes on 2 cores; writes docs/benchmarks.md. Options go in BENCH_ARGS, e.g.
# `make bench BENCH_ARGS=--quick` or `make bench BENCH_ARGS=--ten-million`.
bench: install bench-deps
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Concurrent clients mixing /predict, /jobs and polling against a fresh local stack for
# SOAK_DURATION_S seconds (not part of `make test`; CI runs a 60 s form as an integration test):
# requests, errors (must be 0), p99, and every job's exact row count. `make soak SOAK_DURATION_S=3600`.
SOAK_DURATION_S ?= 600
soak: install
	$(BIN)/python -m benchmarks.soak --duration-s $(SOAK_DURATION_S) --json var/soak/soak.json

# wrk, the load generator, from Debian's packages.
bench-deps:
	@command -v wrk >/dev/null || { echo "installing: wrk"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
