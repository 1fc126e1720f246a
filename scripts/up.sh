#!/usr/bin/env bash
# Start the Bazaar suite on this machine: databases, migrations, demo data, then every service.
# Ctrl-C (or SIGTERM) stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

UV="$(command -v uv || echo "python3 -m uv")"
run() { $UV run --locked "$@"; }

wait_for_port() { # host port what
  for _ in $(seq 1 60); do
    (echo >"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.5
  done
  echo "error: $3 is not reachable on $1:$2" >&2
  return 1
}

wait_for_port 127.0.0.1 5432 "PostgreSQL (start it, e.g. pg_ctlcluster <version> main start)"

echo "== catalog: database, migrations, demo data"
run bazaar-catalog create-db
run bazaar-catalog migrate
run bazaar-catalog seed

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop INT TERM EXIT

mkdir -p .run
run bazaar-catalog serve >.run/catalog.log 2>&1 &
pids+=($!)

for _ in $(seq 1 60); do
  curl -fsS "http://${CATALOG_HOST}:${CATALOG_PORT}/readyz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "http://${CATALOG_HOST}:${CATALOG_PORT}/readyz" >/dev/null || {
  echo "error: catalog did not become ready; see .run/catalog.log" >&2
  exit 1
}

cat <<TXT

Bazaar is up.
  catalog   http://${CATALOG_HOST}:${CATALOG_PORT}   try: curl http://localhost:${CATALOG_PORT}/v1/products
  logs      .run/*.log (JSON lines)
Press Ctrl-C to stop.
TXT
wait
