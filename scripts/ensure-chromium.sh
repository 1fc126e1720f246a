#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium: the gateway's /docs test renders the
# page in it (headless, no network). Installs the `chromium` package when it is missing.
# Needs root (or sudo) and Debian's package registry; exits non-zero with the reason if not.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [[ -x "$CHROMIUM" ]]; then
  echo "ensure-chromium: $CHROMIUM present ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
  exit 0
fi

fail() {
  echo "ensure-chromium: error: $*" >&2
  echo "ensure-chromium: install it by hand: apt-get update && apt-get install -y chromium" >&2
  exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "$CHROMIUM is missing and apt-get is not available (not Debian?)"

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || fail "$CHROMIUM is missing and installing it needs root (no sudo)"
  SUDO=(sudo -n)
fi

echo "ensure-chromium: $CHROMIUM is missing; installing Debian's chromium package"
echo "ensure-chromium: + apt-get update -qq"
"${SUDO[@]}" apt-get update -qq || fail "apt-get update failed"
echo "ensure-chromium: + apt-get install -y -qq chromium"
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq chromium \
  || fail "apt-get install chromium failed"

[[ -x "$CHROMIUM" ]] || fail "the chromium package was installed but $CHROMIUM is still missing"
echo "ensure-chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
