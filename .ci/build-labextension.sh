#!/usr/bin/env bash
# Build the JupyterLab extension (labextension/ -> jupyter_cloudpromote/labextension).
# Needs node >= 18 and npm; reaches only the npm registry (no core-meta download: the
# build script stages @jupyterlab/core-meta from node_modules). Skips the work when the
# build output is newer than every source file, so `make test` stays quick.
set -euo pipefail
cd "$(dirname "$0")/../labextension"
out=../jupyter_cloudpromote/labextension/static/style.js

if ! command -v npm >/dev/null; then
  echo "npm not found: install Node.js >= 18 (apt-get install -y nodejs npm)" >&2
  exit 1
fi
if [ ! -d node_modules ] || [ package.json -nt node_modules ] || [ package-lock.json -nt node_modules ]; then
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
  touch node_modules
fi
if [ -f "$out" ] && [ -z "$(find src style schema package.json scripts -newer "$out" -print -quit)" ]; then
  echo "lab extension up to date ($out)"
  exit 0
fi
npm run build:prod
