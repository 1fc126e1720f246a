#!/usr/bin/env bash
# `make up`: build the suite from the effective settings, then hand it to the supervisor, which
# creates the databases, migrates, declares the broker's queues and bindings (`topology`), seeds
# the demo data, starts auth, catalog, orders and the gateway, restarts any that crash, and
# prints the gateway's address once /readyz is green.
# A local Prometheus (Debian's prometheus package, installed when missing) scrapes the suite
# with the rules of deploy/monitoring/ loaded: http://localhost:9090 (PROMETHEUS_PORT), data
# in .run/prometheus. MONITORING=0 leaves it out.
# DETACH=1 returns once ready (`make down` stops it). Ctrl-C stops everything it started.
# Settings come from the environment or .env; nothing here overrides a value you have set.
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p .run
umask 077 # the suite file names the development admin's password
if [[ "${MONITORING:-}" != 0 && -x scripts/ensure-prometheus.sh ]]; then
  # Without it the suite runs all the same: the banner says why there is no Prometheus.
  scripts/ensure-prometheus.sh || echo "up: Prometheus could not be installed (MONITORING=0 skips it)" >&2
fi
.venv/bin/python scripts/bazaar_suite.py --run-dir .run >.run/suite.json
args=(up .run/suite.json --run-dir .run)
[[ -n "${BAZAAR_UP_T0:-}" ]] && args+=(--since "$BAZAAR_UP_T0")
[[ -n "${DETACH:-}" && "${DETACH}" != 0 ]] && args+=(--detach)
exec .venv/bin/python scripts/supervise.py "${args[@]}"
