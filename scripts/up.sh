#!/usr/bin/env bash
# Start the Bazaar suite on this machine: databases, migrations, demo data, then every service.
# Settings come from the environment or .env (as the services read them); nothing here
# overrides a value you have set. Ctrl-C or SIGTERM stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin   # `make deps` has synced it

# host:port a service will listen on, from its own effective settings.
address_of() {
  "$BIN/bazaar-$1" settings | "$BIN/python" -c 'import json,sys; d=json.load(sys.stdin); print("%s:%s" % (d["host"], d["port"]))'
}

wait_ready() { # name address
  "$BIN/python" - "$1" "$2" <<'PY'
import sys, time, urllib.request
name, address = sys.argv[1], sys.argv[2]
for _ in range(120):
    try:
        urllib.request.urlopen(f"http://{address}/readyz", timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.5)
sys.exit(f"error: {name} did not become ready; see .run/{name}.log")
PY
}

echo "== catalog: database, migrations, demo data"
"$BIN/bazaar-catalog" create-db || {
  echo "error: cannot reach the catalog's PostgreSQL (CATALOG_DATABASE_URL); is it running?" >&2
  exit 1
}
"$BIN/bazaar-catalog" migrate
"$BIN/bazaar-catalog" seed

pids=()
stop() {
  trap - INT TERM HUP EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop INT TERM HUP EXIT

mkdir -p .run
# The service binary itself is the child, so its PID is the one to signal.
"$BIN/bazaar-catalog" serve >.run/catalog.log 2>&1 &
pids+=($!)

catalog=$(address_of catalog)
wait_ready catalog "$catalog"

cat <<TXT

Bazaar is up.
  catalog   http://${catalog}   try: curl http://${catalog}/v1/products
  logs      .run/*.log (JSON lines)
Press Ctrl-C to stop.
TXT
wait
