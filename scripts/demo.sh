#!/usr/bin/env bash
# Run the orders example on the embedded memory backend (installs unimq into .venv first).
# Set UNIMQ_URL to run the same example on a real broker.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
# An editable install follows source edits by itself: reinstall only when the packaging changed
# (pyproject.toml) or unimq is not importable from .venv.
stamp=".venv/.unimq-demo-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! python -c "import unimq" 2>/dev/null; then
  echo "==> installing unimq into .venv"
  python -m pip install --quiet --disable-pip-version-check -e .
  echo "$want" > "$stamp"
else
  echo "==> unimq already installed in .venv (pyproject.toml unchanged)"
fi
echo "==> python -m examples.orders"
python -m examples.orders "$@"
