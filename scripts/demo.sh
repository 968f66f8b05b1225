#!/usr/bin/env bash
# Run the orders example on the embedded memory backend (installs unimq into .venv first).
# Set UNIMQ_URL to run the same example on a real broker.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
# Skipped while the stamp holds the hash of pyproject.toml and the Python version (unimq is
# installed editable, so code changes need no reinstall).
stamp=.venv/.unimq-demo-deps
want=$( { python --version 2>&1; cat pyproject.toml; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing unimq into .venv"
  python -m pip install --quiet --disable-pip-version-check -e .
  echo "$want" >"$stamp"
fi
echo "==> python -m examples.orders"
python -m examples.orders "$@"
