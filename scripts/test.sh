#!/usr/bin/env bash
# Run unimq's test suite. Creates .venv on first use and installs everything the tests need
# (the project with its dev extras, the broker clients, and the toy third-party adapter the
# plugin test uses). Extra arguments go to pytest, e.g. scripts/test.sh -k retry
#
# The real-broker tests (testcontainers/tests) need Docker and the locally built broker
# images (bash testcontainers/prepare-machine.sh, as root); without them they are skipped
# with the reason, except under CI=true, where they fail.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
echo "==> installing unimq and test dependencies into .venv"
python -m pip install --quiet --disable-pip-version-check -e ".[dev,testing,realbrokers]"
# A separate step: it depends on unimq, which must already be installed from this checkout.
python -m pip install --quiet --disable-pip-version-check ./tests/toy_transport
echo "==> pytest"
python -m pytest "$@"
