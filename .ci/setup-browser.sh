#!/usr/bin/env bash
# Chromium for the real-browser tests (Debian's package; Playwright drives it through
# executable_path, so no browser download). Idempotent: does nothing when present.
set -euo pipefail
if command -v chromium >/dev/null && fc-list 2>/dev/null | grep -qi dejavu; then
  echo "chromium present: $(chromium --version 2>/dev/null || true)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
chromium --version
