# flashsale: `make run` and `make test` are all a fresh clone needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip check
	@touch $@

install: $(INSTALLED) ## create .venv with flashsale and its test tools

run: $(INSTALLED) ## the whole system on this machine: API on :8000 and a worker (Ctrl-C stops it)
	$(BIN)/flashsale dev

test: $(INSTALLED) lint ## lint, then the whole test suite on real Redis and PostgreSQL
	$(BIN)/pytest

lint: $(INSTALLED) ## ruff: lint and formatting
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED) ## rewrite files to ruff's formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(INSTALLED) ## measure /buy under load and the limiter (needs wrk); prints the figures
	$(BIN)/python -m bench.buy_load
	$(BIN)/python -m bench.limiter
	$(BIN)/python -m bench.workers

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
