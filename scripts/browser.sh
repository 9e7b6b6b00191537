#!/usr/bin/env bash
# Provisions what the console's browser test needs: Debian's chromium, Node.js with npm
# (from the distribution's packages when missing) and playwright-core from the npm
# registry, pinned by tests/browser/package-lock.json. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[browser] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pkgs=()
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || pkgs+=(chromium)
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
if [ ${#pkgs[@]} -gt 0 ]; then
  log "installing ${pkgs[*]} from the distribution's packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
cd "$ROOT/tests/browser"
if [ ! -d node_modules/playwright-core ]; then
  log "installing playwright-core (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
