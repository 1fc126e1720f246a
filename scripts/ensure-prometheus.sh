#!/usr/bin/env bash
# Make sure Debian's Prometheus is installed: `promtool` checks and unit-tests the alert rules
# (tests/monitoring), `prometheus` is the local server `make up` starts with the suite's own
# configuration. Installs the `prometheus` package when either is missing, without its
# recommended node exporter (--no-install-recommends), and WITHOUT starting the package's
# system service: no Prometheus is left running or listening (9090) after this, and no node
# exporter (9100) is installed. How: the install runs under a policy-rc.d that refuses every
# service start (invoke-rc.d and deb-systemd-invoke obey it), the service is then disabled at
# boot, and if the package's service runs anyway it is stopped through its init script.
# Needs root (or password-less sudo) and Debian's package registry; exits non-zero, saying
# why, if it cannot. apt's own output is shown only when a step fails.
set -euo pipefail

PROMTOOL=${PROMTOOL:-/usr/bin/promtool}        # overridable only to test this script
PROMETHEUS=${PROMETHEUS:-/usr/bin/prometheus}  # idem
POLICY=/usr/sbin/policy-rc.d

version() { "$1" --version 2>&1 | head -n 1 || echo "$1"; }

if [[ -x "$PROMTOOL" && -x "$PROMETHEUS" ]]; then
  echo "ensure-prometheus: $PROMTOOL present ($(version "$PROMTOOL"))"
  exit 0
fi

fail() {
  echo "ensure-prometheus: error: $*" >&2
  echo "ensure-prometheus: the rule tests need promtool and \`make up\` needs prometheus; install by hand with:" \
    "apt-get update && apt-get install -y --no-install-recommends prometheus" >&2
  exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "prometheus is missing and apt-get is not available (not Debian?)"

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || fail "prometheus is missing and installing it needs root (no sudo)"
  SUDO=(sudo -n)
fi

LOG=$(mktemp)
SAVED=""   # an existing policy-rc.d, moved aside while ours is in place
OURS=""    # set once our policy-rc.d is in place
cleanup() {
  rm -f "$LOG"
  if [[ -n "$OURS" ]]; then
    "${SUDO[@]}" rm -f "$POLICY"
    if [[ -n "$SAVED" ]]; then "${SUDO[@]}" mv "$SAVED" "$POLICY"; fi
  fi
}
trap cleanup EXIT

run() { # describe the command, run it quietly, show its output only if it fails
  echo "ensure-prometheus: + $*"
  if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "$@" >"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    fail "'$*' failed"
  fi
}

# Refuse service starts during the install (exit 101: "action forbidden by policy"), as
# Debian's container images do; an existing policy is moved aside and put back afterwards.
if [[ -e "$POLICY" ]]; then
  SAVED=$("${SUDO[@]}" mktemp "$POLICY.ensure-prometheus.XXXXXX")
  "${SUDO[@]}" cp -p "$POLICY" "$SAVED"
fi
printf '#!/bin/sh\n# ensure-prometheus.sh: no service starts while it installs\nexit 101\n' \
  | "${SUDO[@]}" tee "$POLICY" >/dev/null
"${SUDO[@]}" chmod 755 "$POLICY"
OURS=1

echo "ensure-prometheus: promtool or prometheus is missing; installing Debian's prometheus package"
run apt-get update -qq -o DPkg::Lock::Timeout=120
run apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=120 prometheus

# Not at boot either: Bazaar starts its own Prometheus with its own configuration.
if [[ -d /run/systemd/system ]]; then
  "${SUDO[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
elif [[ -x /etc/init.d/prometheus ]]; then
  "${SUDO[@]}" update-rc.d prometheus disable >/dev/null 2>&1 || true
fi
# Belt and braces: if the package's service runs anyway, stop it through its own init script
# (it keeps its pid in /run/prometheus/prometheus.pid).
if [[ -x /etc/init.d/prometheus ]] && "${SUDO[@]}" /etc/init.d/prometheus status >/dev/null 2>&1; then
  echo "ensure-prometheus: the package's prometheus service is running; stopping it"
  "${SUDO[@]}" /etc/init.d/prometheus stop >/dev/null 2>&1 || fail "could not stop the prometheus service"
fi
if dpkg-query -W -f='${Status}' prometheus-node-exporter 2>/dev/null | grep -q "install ok installed"; then
  echo "ensure-prometheus: note: prometheus-node-exporter is installed (not by this script)" >&2
fi

[[ -x "$PROMTOOL" && -x "$PROMETHEUS" ]] || fail "the prometheus package was installed but $PROMTOOL or $PROMETHEUS is still missing"
echo "ensure-prometheus: installed $(version "$PROMTOOL"); its system service is not running and disabled at boot"
