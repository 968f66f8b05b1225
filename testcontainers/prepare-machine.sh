#!/usr/bin/env bash
# Make this machine ready for the real-broker tests, idempotently:
#   1. apt-get install docker.io, debootstrap, maven when missing
#   2. start dockerd in the background when `docker info` fails, wait (bounded)
#   3. build or reuse the broker images (build-images.sh) and write
#      testcontainers/.images.env, which the pytest fixtures read.
# Prints progress and timings; exits non-zero with a message on failure.
#
# Usage: bash testcontainers/prepare-machine.sh [build-images.sh args...]
# Environment:
#   UNIMQ_DOCKERD_FLAGS       extra dockerd flags (none were needed here)
#   UNIMQ_DOCKERD_WAIT        seconds to wait for dockerd (default 90)
#   UNIMQ_SKIP_IMAGE_BUILD=1  stop after step 2
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
T0=$(date +%s)
log() { printf '[prepare-machine %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { printf '[prepare-machine] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || die "must run as root (or with sudo available)"
  SUDO="sudo"
fi

# -- 1. packages ---------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -q >/tmp/unimq-apt-update.log 2>&1 || { tail -20 /tmp/unimq-apt-update.log >&2; die "apt-get update failed"; }
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/tmp/unimq-apt-install.log 2>&1 \
    || { tail -30 /tmp/unimq-apt-install.log >&2; die "apt-get install ${missing[*]} failed"; }
  log "packages installed"
else
  log "docker.io, debootstrap, maven already installed"
fi
command -v docker >/dev/null 2>&1 || die "no docker CLI after installing docker.io"

# -- 2. docker engine ------------------------------------------------------------
if docker info >/dev/null 2>&1; then
  log "Docker engine already running"
else
  DOCKERD_LOG=/var/log/unimq-dockerd.log
  if pgrep -x dockerd >/dev/null 2>&1; then
    log "dockerd process exists but is not answering yet; waiting"
  else
    log "starting dockerd ${UNIMQ_DOCKERD_FLAGS:-} in the background (log: $DOCKERD_LOG)"
    # shellcheck disable=SC2086
    $SUDO setsid nohup dockerd ${UNIMQ_DOCKERD_FLAGS:-} >"$DOCKERD_LOG" 2>&1 </dev/null &
  fi
  wait_s="${UNIMQ_DOCKERD_WAIT:-90}"
  for ((i = 0; i < wait_s * 2; i++)); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    [ -f "$DOCKERD_LOG" ] && tail -30 "$DOCKERD_LOG" >&2
    die "Docker engine did not come up within ${wait_s}s (see $DOCKERD_LOG)"
  fi
  log "Docker engine up: $(docker version --format 'server {{.Server.Version}}' 2>/dev/null)"
fi

# -- 3. images -------------------------------------------------------------------
if [ "${UNIMQ_SKIP_IMAGE_BUILD:-0}" = 1 ]; then
  log "UNIMQ_SKIP_IMAGE_BUILD=1: not building images"
  exit 0
fi
bash "$HERE/build-images.sh" "$@" || die "building the broker images failed"
log "machine ready in $(( $(date +%s) - T0 ))s; images: $HERE/.images.env"
