#!/usr/bin/env bash
# Prepare this machine for every test suite, exactly as CI does (as root, or with sudo):
#   1. testcontainers/prepare-machine.sh: Docker (docker.io), dockerd, the broker images
#      (built without a registry, cached by content hash; writes testcontainers/.images.env)
#   2. scripts/install-stores.sh: redis-server and PostgreSQL for the store tests
# Both steps are idempotent and take about a second when everything is already there.
# scripts/test.sh runs this by itself when it runs as root on Debian.
set -euo pipefail
cd "$(dirname "$0")/.."
bash testcontainers/prepare-machine.sh
bash scripts/install-stores.sh
