# Bazaar — the commands a newcomer types. `make up` runs the suite, `make test` proves it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv comes from PyPI when the machine does not have it yet.
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif

SRC := shared/src services/catalog/src

# Development values; anything already set in the environment wins (make's ?=).
export CATALOG_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/bazaar_catalog
export CATALOG_HOST ?= 127.0.0.1
export CATALOG_PORT ?= 8002

.PHONY: help up test deps uv lint typecheck pytest contracts db clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		{ echo "installing uv from PyPI"; python3 -m pip install --quiet --disable-pip-version-check uv; }

deps: uv ## install the locked dependencies into .venv
	@$(UV) sync --locked --quiet

up: deps ## create the databases, migrate, seed demo data and run the suite
	@scripts/up.sh

test: deps lint typecheck pytest ## lint, type-check and run every test

lint: deps ## ruff check and ruff format --check
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .

typecheck: deps ## mypy --strict on every src/ tree
	$(UV) run --locked mypy --strict $(SRC)

pytest: deps ## every test: unit, integration (real PostgreSQL), contract, system
	$(UV) run --locked pytest $(PYTEST_ARGS)

contracts: deps ## regenerate the committed OpenAPI documents
	$(UV) run --locked bazaar-catalog openapi --output contracts/openapi/catalog.json

db: deps ## create and migrate the databases (no seed, no serve)
	$(UV) run --locked bazaar-catalog create-db
	$(UV) run --locked bazaar-catalog migrate

clean: ## remove the virtual environment and caches
	rm -rf .venv .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
