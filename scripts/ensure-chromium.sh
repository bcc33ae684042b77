#!/usr/bin/env bash
# Make sure headless Chromium is available for tests/test_report_browser.py.
# Idempotent: does nothing when chromium is already installed. Installs Debian's `chromium`
# package when missing and we are root; otherwise says what to do and exits 1.
# Never prompts and never waits forever (apt runs under a timeout).
set -euo pipefail

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
APT_TIMEOUT="${APT_TIMEOUT:-600}"   # seconds, per apt-get call

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-chromium: $CHROMIUM not found and not root; install it with:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y chromium" >&2
    echo "(tests/test_report_browser.py is skipped without it, and fails when CI=true)" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: $CHROMIUM not found and apt-get is not available; install Chromium by hand" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
          -o DPkg::Lock::Timeout=60 -o Acquire::Retries=2 -o Acquire::http::Timeout=30)

echo "ensure-chromium: installing chromium (apt-get)..." >&2
timeout "$APT_TIMEOUT" apt-get update -qq "${apt_opts[@]}"
timeout "$APT_TIMEOUT" apt-get install -y -qq --no-install-recommends "${apt_opts[@]}" chromium >/dev/null

if [ ! -x "$CHROMIUM" ]; then
    echo "ensure-chromium: apt-get finished but $CHROMIUM is still missing" >&2
    exit 1
fi
echo "ensure-chromium: $("$CHROMIUM" --version 2>/dev/null || echo chromium) installed" >&2
