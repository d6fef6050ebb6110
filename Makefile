# Sekisho. `make demo` runs the gateway in front of a private PostgreSQL with synthetic customers;
# `make test` runs the checks and the whole test suite against real PostgreSQL servers.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint unit bench provision clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $@

demo: $(STAMP)
	$(BIN)/sekisho demo

provision:
	bash scripts/provision

lint: $(STAMP)
	$(BIN)/ruff check gateway policy tests bench
	$(BIN)/ruff format --check gateway policy tests bench
	$(BIN)/mypy

test: $(STAMP) provision lint
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest -m 'not slow' tests/unit

bench: $(STAMP) provision
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .sekisho-demo .test-work bench/out
