#!/usr/bin/env bash
# Make a Docker engine and the local base image the tests use available on Debian 12, as root.
# Idempotent: installs only what is missing, starts dockerd only when the socket does not
# answer, builds the base image only when it is absent. No image registry is reachable on the
# test machines, so the base image is made from Debian packages (mmdebstrap | docker import).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

BASE_IMAGE="${CLOUDPROMOTE_TEST_BASE_IMAGE:-cloudpromote-base:test}"
DOCKERD_LOG=/var/log/cloudpromote-dockerd.log
SUITE=bookworm

say() { echo "[setup-docker] $*"; }

if [ "$(id -u)" != 0 ]; then
  say "must run as root (installs packages and starts dockerd)" >&2
  exit 1
fi
# dockerd keeps the working directory it starts in: start it from / so it outlives the
# checkout that ran this script.
cd /

# 1. Packages.
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
# A local image registry for the push tests (started by the tests themselves, on 127.0.0.1).
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
else
  say "docker.io, mmdebstrap and docker-registry already installed"
fi

# 2. The engine.
engine_answers() { timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
if engine_answers; then
  say "Docker engine already answering on /var/run/docker.sock"
else
  say "starting dockerd (log: $DOCKERD_LOG)"
  setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    engine_answers && break
    sleep 1
  done
  if ! engine_answers; then
    say "dockerd did not answer within 60 s; last lines of $DOCKERD_LOG:" >&2
    tail -n 30 "$DOCKERD_LOG" >&2 || true
    exit 1
  fi
  say "Docker engine $(docker version --format '{{.Server.Version}}') is up"
fi

# 3. The base image: Debian with python3, venv, pip and the CA certificates package.
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  say "base image $BASE_IMAGE already present"
else
  # Use the same Debian mirror apt is configured with (the one reachable from here).
  mirror=""
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    mirror=$(awk -v suite="$SUITE" '
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
      /^$/ { if (found && uri != "") { print uri; exit } uri = ""; found = 0 }
      END { if (found && uri != "") print uri }' "$file" | head -n 1)
    [ -n "$mirror" ] && break
  done
  if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk -v suite="$SUITE" '$1 == "deb" && $0 ~ (" " suite " ") { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
      | head -n 1)
  fi
  mirror="${mirror:-http://deb.debian.org/debian}"
  say "building $BASE_IMAGE with mmdebstrap from $mirror (about 30 s)"
  mmdebstrap --variant=apt --include=python3,python3-venv,python3-pip,ca-certificates \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    "$SUITE" - "deb $mirror $SUITE main" \
    | docker import - "$BASE_IMAGE"
  say "base image $BASE_IMAGE built"
fi

docker image inspect "$BASE_IMAGE" --format "[setup-docker] ready: $BASE_IMAGE {{.Id}} {{.Size}} bytes"
