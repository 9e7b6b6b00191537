#!/usr/bin/env bash
# Provisions what the generated-client tests need, idempotently:
# - a Python virtual environment in .data/clients-venv with openapi-python-client from PyPI
#   (its dependencies are the generated client's: httpx, attrs, python-dateutil); the venv
#   keeps it off the system's Python, which Debian's and Ubuntu's refuse to change;
# - openapi-typescript, openapi-fetch and TypeScript from the npm registry, pinned by
#   tests/clients/package-lock.json (Node.js and npm come from scripts/browser.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[clients] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
OPC_VERSION=0.29.1
VENV="$ROOT/.data/clients-venv"
if ! "$VENV/bin/python" -c 'import openapi_python_client' 2>/dev/null \
  || [ "$("$VENV/bin/python" -m pip show openapi-python-client 2>/dev/null | sed -n 's/^Version: //p')" != "$OPC_VERSION" ]; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    log "installing python3-venv from the distribution's packages"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  log "installing openapi-python-client $OPC_VERSION into $VENV"
  rm -rf "$VENV"
  mkdir -p "$ROOT/.data"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "openapi-python-client==$OPC_VERSION"
fi
cd "$ROOT/tests/clients"
if [ ! -x node_modules/.bin/tsc ] || [ ! -x node_modules/.bin/openapi-typescript ]; then
  log "installing openapi-typescript, openapi-fetch and typescript (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
