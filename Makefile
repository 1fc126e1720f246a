# Bazaar — the commands a newcomer types. `make up` runs the suite, `make test` proves it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv: the one on PATH, else our own copy in .tools/ (a venv, so PEP 668 never gets in the way).
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)

SRC := shared/src services/catalog/src services/auth/src services/orders/src gateway/src

.PHONY: help up down test deps lint typecheck gates pytest pacts contracts contracts-check dashboards images images-test db clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

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

up: deps ## create the databases, migrate, seed, run the suite and Prometheus (DETACH=1: in the background; MONITORING=0: no Prometheus)
	@BAZAAR_UP_T0=$(UP_T0) DETACH=$(DETACH) MONITORING=$(MONITORING) scripts/up.sh

down: ## stop a suite started with make up DETACH=1
	@python3 scripts/supervise.py down

test: deps lint typecheck contracts-check gates pytest ## lint, type-check, check the contracts, run the security and policy gates and every test (with branch coverage)

lint: deps ## ruff check and ruff format --check
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .

typecheck: deps ## mypy --strict on every src/ tree and the scripts' typed packages
	$(UV) run --locked mypy --strict $(SRC)
	MYPYPATH=scripts $(UV) run --locked mypy --strict scripts/dashboards.py scripts/bazaar_dashboards scripts/contracts_check.py scripts/bazaar_contracts \
		scripts/gates/secret_scan.py scripts/gates/dependency_audit.py \
		scripts/images.py scripts/images_journey.py scripts/images_manifest.py scripts/images_podman.py scripts/images_sbom.py scripts/images_standin.py

contracts-check: deps ## fail on a breaking change to contracts/ since the last release (BASE=<tag|commit|folder>)
	$(UV) run --locked python scripts/contracts_check.py $(if $(BASE),--base $(BASE))

gates: deps ## security and policy gates: secrets against .secrets.baseline, known vulnerabilities in uv.lock, checkov on what we deploy
	$(UV) run --locked python scripts/gates/secret_scan.py
	$(UV) run --locked python scripts/gates/dependency_audit.py
	UV=$(UV) scripts/gates/checkov.sh

# COV= (empty) runs tests without coverage, e.g. make pytest COV= PYTEST_ARGS=shared/tests
COV ?= --cov --cov-report=html --cov-report=xml

# The Pact library (contract tests) reports to its makers' analytics unless this is set.
pytest: deps ## every test: unit, integration (real PostgreSQL, Redis), contract, browser, system; branch coverage in build/coverage
	@scripts/ensure-chromium.sh
	@scripts/ensure-prometheus.sh
	PACT_DO_NOT_TRACK=true $(UV) run --locked pytest $(COV) $(PYTEST_ARGS)

# The consumers' pact tests: services/<consumer>/tests/pact/test_<consumer>_<provider>_pact.py.
CONSUMER_PACT_TESTS = $(wildcard services/*/tests/pact/test_*_pact.py)

pacts: deps ## rewrite contracts/pacts/ from the consumers' pact tests (BAZAAR_UPDATE_PACTS=1); review with git diff contracts/pacts
	BAZAAR_UPDATE_PACTS=1 PACT_DO_NOT_TRACK=true $(UV) run --locked pytest $(CONSUMER_PACT_TESTS)

SERVICES := auth catalog orders

contracts: deps ## regenerate the committed OpenAPI documents
	@for s in $(SERVICES); do $(UV) run --locked bazaar-$$s openapi --output contracts/openapi/$$s.json; done
	$(UV) run --locked python -m bazaar.gateway.contract contracts/openapi

dashboards: deps ## regenerate the committed Grafana dashboards (deploy/monitoring/dashboards)
	$(UV) run --locked python scripts/dashboards.py

images: deps ## build the four images with podman (offline stand-ins for missing base images) and an SBOM each in build/images/
	$(UV) run --locked python scripts/images.py build

images-test: images ## run the images as containers (non-root, read-only) on this machine's PostgreSQL, RabbitMQ, Redis: migrations, the journey, SIGTERM
	$(UV) run --locked python scripts/images.py test

db: deps ## create and migrate the databases (no seed, no serve)
	@for s in $(SERVICES); do $(UV) run --locked bazaar-$$s create-db && $(UV) run --locked bazaar-$$s migrate; done

clean: ## remove the virtual environments and caches
	rm -rf .venv .tools .mypy_cache .ruff_cache build
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
