#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests (tests/e2e/), once: does nothing when
# /usr/bin/chromium is already there. playwright-core drives it; it never downloads a browser.
# Without apt-get (or root) it says so and exits 1; the e2e tests then skip loudly, or fail when
# TIDEMARK_REQUIRE_SERVICES=1.
set -euo pipefail
CHROMIUM=${TIDEMARK_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium.sh: no $CHROMIUM and no apt-get to install it" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "chromium.sh: installing Chromium needs root" >&2
    exit 1
  fi
fi
echo "installing Chromium (Debian package chromium)..." >&2
$SUDO apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null
[ -x "$CHROMIUM" ]
