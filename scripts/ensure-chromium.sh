#!/usr/bin/env bash
# Make sure Debian's Chromium is installed at /usr/bin/chromium: the dashboard's browser tests drive it
# with Playwright (Playwright's own browser download is not used). Idempotent; needs no stdin; quiet
# unless it installs something. Exit 1, saying why, if Chromium is still missing afterwards.
#
#   RC_CHROMIUM  the browser the tests use (default /usr/bin/chromium): when it exists, nothing is done
set -euo pipefail

BROWSER="${RC_CHROMIUM:-/usr/bin/chromium}"

say() { printf 'ensure-chromium: %s\n' "$*"; }

if [ -x "$BROWSER" ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  say "$BROWSER is missing and apt-get is not available: install Chromium, or set RC_CHROMIUM to its path" >&2
  exit 1
fi

sudo_if_needed=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo_if_needed=(sudo -n)
  else
    say "$BROWSER is missing and installing it needs root (or sudo)" >&2
    exit 1
  fi
fi

say "installing Debian's chromium (apt-get)"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
apt() {
  if ! timeout 900 "${sudo_if_needed[@]}" apt-get -qq "$@" </dev/null >"$log" 2>&1; then
    say "apt-get $* failed:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
}
apt update
apt install -y --no-install-recommends chromium fonts-dejavu-core

if [ ! -x "$BROWSER" ]; then
  say "apt-get finished but $BROWSER is still missing" >&2
  exit 1
fi
say "installed: $("$BROWSER" --version 2>/dev/null || echo "$BROWSER")"
