# flashsale: `make run` and `make test` are all a fresh clone needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.bench-installed
# checkov scans the rendered chart; it pins packages ours need newer, so it lives apart.
CHECKOV_VENV ?= .venv-checkov
CHECKOV := $(CHECKOV_VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help system-packages run-packages bench-packages install run test lint audit format chart-readme bench bench-quick soak e2e clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

system-packages: ## install the Debian packages the tests need, if missing (apt-get, as root or via sudo)
	bash .ci/system-packages test

# make run needs redis-server and PostgreSQL only when none answers; if they cannot be
# installed here, `flashsale dev` still says what is missing.
run-packages:
	-@bash .ci/system-packages run

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip check
	@touch $@

$(BENCH_INSTALLED): $(INSTALLED)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@touch $@

bench-packages:
	bash .ci/system-packages bench

$(CHECKOV):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet 'checkov>=3.2,<4'
	@touch $@

install: $(INSTALLED) $(CHECKOV) ## create .venv with flashsale and its test tools (and .venv-checkov)

run: run-packages $(INSTALLED) ## the whole system on this machine: API on :8000 and a worker (Ctrl-C stops it)
	$(BIN)/flashsale dev

test: system-packages $(INSTALLED) $(CHECKOV) lint audit ## lint, audit, then every test: unit, integration, chart, e2e (local mode)
	$(BIN)/pytest

lint: $(INSTALLED) ## ruff: lint and formatting
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# pip-audit asks PyPI's JSON API about every installed distribution (flashsale itself, editable,
# is not on PyPI). A finding that cannot be fixed yet is ignored with --ignore-vuln ID, and a
# comment saying why. AUDIT_FLAGS=--strict also fails on a dependency PyPI could not answer for.
AUDIT_FLAGS ?=
audit: $(INSTALLED) ## pip-audit: known vulnerabilities in the installed dependencies (asks PyPI)
	$(BIN)/pip-audit --skip-editable --progress-spinner off $(AUDIT_FLAGS)

format: $(INSTALLED) ## rewrite files to ruff's formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# charts/flashsale/README.md is generated: README.md.tmpl's head and a table of every value,
# from values.yaml's comments and values.schema.json's types (tests/test_chart_readme.py fails when stale).
chart-readme: $(INSTALLED) ## regenerate charts/flashsale/README.md from values.yaml and README.md.tmpl
	$(BIN)/python -m k8s.chart_readme

# Every benchmark runs even when one misses a target, so that all are published
# (docs/benchmarks/) and docs/performance.md's tables rendered from them; then make fails if one missed.
bench: bench-packages $(BENCH_INSTALLED) ## every benchmark against its targets (about 30 min); publishes docs/benchmarks/ and docs/performance.md's tables
	@failed=; for benchmark in paths drop workers memory limiter; do \
	  $(BIN)/python -m bench.$$benchmark --publish || failed="$$failed $$benchmark"; done; \
	$(BIN)/python -m bench.report; \
	if [ -n "$$failed" ]; then echo "targets missed or failed:$$failed"; exit 1; fi

soak: bench-packages $(INSTALLED) ## ten minutes at 70 % of the admit path, a fault every minute, then every promise checked (about 22 min)
	$(BIN)/python -m bench.soak

bench-quick: bench-packages $(INSTALLED) ## the request paths, 3 s rounds (CI): fails when one misses a target (ratio, rate, p99, only its status)
	$(BIN)/python -m bench.paths --quick

# What .github/workflows/e2e.yml does, from a machine with Docker: k8s/e2e.sh fetches kind,
# kubectl, helm and ct at k8s/versions.env's versions and runs every step the workflow runs.
e2e: $(INSTALLED) ## kind cluster, image, Traefik, KEDA, the chart, helm test, the suite, an upgrade, ct install; then deletes the cluster (KEEP_CLUSTER=1 keeps it)
	E2E_PYTEST=$(abspath $(BIN))/pytest k8s/e2e.sh all

clean: ## remove the virtualenvs and caches
	rm -rf $(VENV) $(CHECKOV_VENV) .pytest_cache .ruff_cache .hypothesis
