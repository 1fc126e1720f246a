#!/usr/bin/env bash
# Start the Bazaar suite on this machine: databases, migrations, demo data, then every service.
# Settings come from the environment or .env (as the services read them); nothing here
# overrides a value you have set. Ctrl-C or SIGTERM stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin   # `make deps` has synced it
SERVICES=(auth catalog)

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

for name in "${SERVICES[@]}"; do
  echo "== $name: database and migrations"
  "$BIN/bazaar-$name" create-db || {
    echo "error: cannot reach $name's PostgreSQL (${name^^}_DATABASE_URL); is it running?" >&2
    exit 1
  }
  "$BIN/bazaar-$name" migrate
done
echo "== catalog: demo data"
"$BIN/bazaar-catalog" seed

pids=()
stop() {
  trap - INT TERM HUP EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop INT TERM HUP EXIT

mkdir -p .run
declare -A address
for name in "${SERVICES[@]}"; do
  # The service binary itself is the child, so its PID is the one to signal.
  "$BIN/bazaar-$name" serve >".run/$name.log" 2>&1 &
  pids+=($!)
  address[$name]=$(address_of "$name")
done
for name in "${SERVICES[@]}"; do wait_ready "$name" "${address[$name]}"; done

# The gateway last, in front of them all: the one public door.
"$BIN/bazaar-gateway" serve >.run/gateway.log 2>&1 &
pids+=($!)
gateway=$("$BIN/bazaar-gateway" settings | "$BIN/python" -c 'import json,sys; d=json.load(sys.stdin); print("%s:%s" % (d["host"], d["port"]))')
wait_up() { # name url: poll until it answers 200
  "$BIN/python" - "$1" "$2" <<'PY'
import sys, time, urllib.request
for _ in range(120):
    try:
        urllib.request.urlopen(sys.argv[2], timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.5)
sys.exit(f"error: {sys.argv[1]} did not start; see .run/{sys.argv[1]}.log")
PY
}
wait_up gateway "http://$gateway/healthz"

read -r admin_email admin_password < <("$BIN/bazaar-auth" dev-login 2>/dev/null || echo "(see AUTH_ADMIN_EMAIL) (see AUTH_ADMIN_PASSWORD)")

cat <<TXT

Bazaar is up at http://${gateway}  (the gateway: clients talk only to it)
  try       curl http://${gateway}/v1/products
  admin     ${admin_email} / ${admin_password}
            curl -d grant_type=password -d username=${admin_email} -d password=${admin_password} http://${gateway}/v1/auth/token
  services  auth http://${address[auth]}, catalog http://${address[catalog]} (direct, for debugging)
  logs      .run/*.log (JSON lines)
Press Ctrl-C to stop.
TXT
wait
