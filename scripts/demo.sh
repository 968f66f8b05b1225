#!/usr/bin/env bash
# Run the orders example on the embedded memory backend (installs unimq into .venv first).
# Set UNIMQ_URL to run the same example on a real broker.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
echo "==> installing unimq into .venv"
python -m pip install --quiet --disable-pip-version-check -e .
echo "==> python -m examples.orders"
python -m examples.orders "$@"
