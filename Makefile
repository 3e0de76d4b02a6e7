# Baton — `make run` serves on SQLite, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A new pyproject.toml means a new install; each kind of install leaves its own stamp.
PROJECTS := pyproject.toml clients/python/pyproject.toml
HASH := $(shell cat $(PROJECTS) | cksum | cut -d' ' -f1)
RUN_STAMP := $(VENV)/.installed-run-$(HASH)
TEST_STAMP := $(VENV)/.installed-test-$(HASH)
TS := clients/typescript

.PHONY: run test test-ts lint format bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The runtime only: what `make run` needs. The client goes in with the server: the
# server depends on it (for signing) and it is not on an index.
$(RUN_STAMP): $(PROJECTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ./clients/python -e .
	find $(VENV) -maxdepth 1 -name '.installed-*' ! -name '*-$(HASH)' -delete
	touch $(RUN_STAMP)

# The runtime and the test toolchain (ruff, mypy, pytest, schemathesis…).
$(TEST_STAMP): $(PROJECTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e './clients/python[test]' -e '.[test]'
	find $(VENV) -maxdepth 1 -name '.installed-*' ! -name '*-$(HASH)' -delete
	touch $(RUN_STAMP) $(TEST_STAMP)

# A local development run (app/devserver.py): private networks allowed, the public
# URL derived from PORT unless BATON_PUBLIC_URL is set, Ctrl-C or SIGTERM a clean stop.
# `exec`: make's own child is the server, so the signals make passes on reach it.
run: $(RUN_STAMP)
	exec $(BIN)/python -m app.devserver --port $${PORT:-8000}

test: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q
	$(MAKE) test-ts

# The TypeScript client: its own dev dependencies (locked), its own test runner.
test-ts:
	cd $(TS) && npm ci --no-audit --no-fund --loglevel=error && npm test

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(TEST_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench/.peers $(TS)/node_modules $(TS)/dist

# Baton and its peers (BullMQ, Celery, DBOS) in one run; the peers install into
# bench/.peers/ on first use. More options: make bench BENCH_ARGS="--no-peers".
BENCH_ARGS ?=
bench: $(TEST_STAMP)
	test -x $(BIN)/py-spy || $(BIN)/python -m pip install --quiet -e './clients/python' -e '.[test,bench]'
	$(BIN)/python -m bench.run --db both --peers $(BENCH_ARGS)
