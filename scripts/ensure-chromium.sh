#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium: the gateway's /docs test renders the
# page in it (headless, no network). Installs the `chromium` package when it is missing.
# Needs root (or password-less sudo) and Debian's package registry; exits non-zero, saying
# why, if it cannot. apt's own output is shown only when a step fails.
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}  # overridable only to test this script

if [[ -x "$CHROMIUM" ]]; then
  echo "ensure-chromium: $CHROMIUM present ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
  exit 0
fi

fail() {
  echo "ensure-chromium: error: $*" >&2
  echo "ensure-chromium: the /docs browser test needs it; install by hand with:" \
    "apt-get update && apt-get install -y chromium" >&2
  exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "$CHROMIUM is missing and apt-get is not available (not Debian?)"

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || fail "$CHROMIUM is missing and installing it needs root (no sudo)"
  SUDO=(sudo -n)
fi

LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

run() { # describe the command, run it quietly, show its output only if it fails
  echo "ensure-chromium: + $*"
  if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "$@" >"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    fail "'$*' failed"
  fi
}

echo "ensure-chromium: $CHROMIUM is missing; installing Debian's chromium package"
run apt-get update -qq
run apt-get install -y -qq chromium

[[ -x "$CHROMIUM" ]] || fail "the chromium package was installed but $CHROMIUM is still missing"
echo "ensure-chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
