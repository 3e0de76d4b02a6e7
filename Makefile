# Baton — `make run` serves on SQLite, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROJECTS := pyproject.toml clients/python/pyproject.toml
STAMP := $(VENV)/.installed-$(shell cat $(PROJECTS) | cksum | cut -d' ' -f1)
TS := clients/typescript

.PHONY: run test test-ts lint format bench clean

$(STAMP): $(PROJECTS)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The client first: the server depends on it (for signing) and it is not on an index.
	$(BIN)/python -m pip install --quiet -e './clients/python[test]' -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: $(STAMP)
	mkdir -p data
	BATON_ALLOW_PRIVATE_NETWORKS=true $(BIN)/uvicorn app.main:app --host 127.0.0.1 --port $${PORT:-8000}

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q
	$(MAKE) test-ts

# The TypeScript client: its own dev dependencies (locked), its own test runner.
test-ts:
	cd $(TS) && npm ci --no-audit --no-fund --loglevel=error && npm test

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench/.peers $(TS)/node_modules $(TS)/dist

# Baton and its peers (BullMQ, Celery, DBOS) in one run; the peers install into
# bench/.peers/ on first use. More options: make bench BENCH_ARGS="--no-peers".
BENCH_ARGS ?=
bench: $(STAMP)
	test -x $(BIN)/py-spy || $(BIN)/python -m pip install --quiet -e './clients/python' -e '.[test,bench]'
	$(BIN)/python -m bench.run --db both --peers $(BENCH_ARGS)
