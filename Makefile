# Bazaar — the commands a newcomer types. `make up` runs the suite, `make test` proves it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv: the one on PATH, else our own copy in .tools/ (a venv, so PEP 668 never gets in the way).
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)

SRC := shared/src services/catalog/src services/auth/src services/orders/src gateway/src

.PHONY: help up down test deps lint typecheck pytest contracts db clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	@echo "installing uv from PyPI into .tools/"
	@python3 -m venv .tools || { echo "error: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
	@.tools/bin/python -m pip install --quiet --disable-pip-version-check uv

deps: $(UV) ## install the locked dependencies into .venv
	@$(UV) sync --locked --quiet

# When `make up` began (before deps), so the suite can say how long it took to be ready.
ifneq ($(filter up,$(MAKECMDGOALS)),)
UP_T0 := $(shell date +%s.%N)
endif

up: deps ## create the databases, migrate, seed, run the suite (DETACH=1: in the background)
	@BAZAAR_UP_T0=$(UP_T0) DETACH=$(DETACH) scripts/up.sh

down: ## stop a suite started with make up DETACH=1
	@python3 scripts/supervise.py down

test: deps lint typecheck pytest ## lint, type-check and run every test

lint: deps ## ruff check and ruff format --check
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .

typecheck: deps ## mypy --strict on every src/ tree
	$(UV) run --locked mypy --strict $(SRC)

pytest: deps ## every test: unit, integration (real PostgreSQL, Redis), contract, browser, system
	@scripts/ensure-chromium.sh
	$(UV) run --locked pytest $(PYTEST_ARGS)

SERVICES := auth catalog orders

contracts: deps ## regenerate the committed OpenAPI documents
	@for s in $(SERVICES); do $(UV) run --locked bazaar-$$s openapi --output contracts/openapi/$$s.json; done
	$(UV) run --locked python -m bazaar.gateway.contract contracts/openapi

db: deps ## create and migrate the databases (no seed, no serve)
	@for s in $(SERVICES); do $(UV) run --locked bazaar-$$s create-db && $(UV) run --locked bazaar-$$s migrate; done

clean: ## remove the virtual environments and caches
	rm -rf .venv .tools .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
