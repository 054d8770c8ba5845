# Nexus: `make run` serves (server + Envoy on SQLite), `make test` runs everything CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BUF    := node_modules/.bin/buf
export PATH := $(CURDIR)/$(BIN):$(PATH)

# arch: the import-linter contracts in pyproject.toml (layers and capability boundaries).
.PHONY: help install gen gen-check buf-lint lint arch typecheck test test-fast run serve migrate bench clean

help:
	@echo "make run    - install, generate, migrate; start Nexus on 127.0.0.1:50051 and Envoy on 127.0.0.1:8080"
	@echo "make test   - install, check generated code, lint, and run the whole test suite"
	@echo "make gen    - regenerate gen/ and docs/api.md from proto/"
	@echo "make bench  - benchmarks, printed as ratios against a bare grpc.aio echo server"

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit("Nexus needs Python 3.11+, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

install: $(STAMP)

# buf comes from npm into ./node_modules (works offline once installed).
$(BUF): package.json package-lock.json
	npm install --silent --no-fund --no-audit
	@touch $@

gen: install
	$(BIN)/python tools/gen.py

gen-check: install
	$(BIN)/python tools/gen.py --check

buf-lint: install
	@if command -v npm >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory $(BUF) && \
	  $(BIN)/python tools/gen.py --protodeps && \
	  $(BUF) lint && $(BUF) format -d --exit-code proto && echo "buf lint and format: clean"; \
	else \
	  echo "*** npm not found: SKIPPED buf lint and buf format (install Node.js/npm to run them) ***"; \
	fi

PY_DIRS := $(wildcard server tools tests bench)

lint: install arch
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)

arch: install
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy server/nexus_server tests

test: install gen-check buf-lint lint typecheck
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -x -m "not e2e" $(PYTEST_ARGS)

migrate: install
	$(BIN)/nexus migrate

serve: install gen
	$(BIN)/nexus serve

run: install gen
	$(BIN)/nexus dev

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules build var .pytest_cache .mypy_cache .ruff_cache
