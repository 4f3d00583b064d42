#!/usr/bin/env bash
# What the test suite needs beyond .venv: redis-server (the Celery broker of the
# deployment tests), chromium and chromium-driver (headless browser of the UI tests, driven by
# selenium from .venv: no browser download). PostgreSQL 15 server binaries come with the machine image; if absent,
# they are installed too. Azurite (Azure Blob Storage emulator) comes from npm, see the end.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Azurite (the Azure Blob Storage emulator of the Azure store tests), from npm into a git-ignored
# cache inside the repo; tests/harness/azurite_server.py runs it from there. 3.35 is the newest
# release that runs on the Node.js of these machines (20) and of Debian 12 (18); 3.36 wants 21.
AZURITE_VERSION=3.35.0
AZURITE_DIR=.cache/npm
if ! grep -qs "\"version\": \"$AZURITE_VERSION\"" "$AZURITE_DIR/node_modules/azurite/package.json"; then
  if ! command -v npm >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  npm install --prefix "$AZURITE_DIR" --no-save --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null
fi
