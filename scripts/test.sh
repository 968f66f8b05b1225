#!/usr/bin/env bash
# Run unimq's tests: the README's one command, and what CI (.ci/run) runs.
#
#   bash scripts/test.sh            every suite: unit, memory and toy conformance, the store
#                                   tests (Redis, PostgreSQL), the real-broker suites
#   bash scripts/test.sh --quick    the edit loop: unit, memory and toy only, no containers,
#                                   no servers, no machine set-up (about 2 minutes)
#   bash scripts/test.sh --no-setup every suite, but never change the machine (only report
#                                   what is missing)
# Any other argument goes to pytest: scripts/test.sh -m kafka, scripts/test.sh -k retry.
#
# First it creates .venv and installs the test dependencies (skipped when unchanged). The full
# run then prepares the machine: as root on Debian it runs scripts/setup-machine.sh (Docker,
# the broker images, Redis and PostgreSQL, exactly as CI; about a second when already done);
# otherwise scripts/check-machine.sh prints in one block what is missing and the command that
# provides it, and the tests that need it are skipped (under CI=true that is a failure).
# pytest ends with a summary table per tier, suite and backend (scripts/pytest_plugins).
#
# Tests run on UNIMQ_TEST_WORKERS pytest-xdist workers (default 2; 1 runs them in one process):
# quick and store tests are spread test by test, each real broker's tests stay on one worker
# (--dist loadgroup, groups from scripts/pytest_plugins/unimq_test_tiers.py), so its containers
# start once while another broker's tests run beside them.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
setup=1
pytest_args=()
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --no-setup) setup=0 ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) pytest_args+=("$arg") ;;
  esac
done
ci=0
case "${CI:-}" in 1 | [Tt][Rr][Uu][Ee] | [Yy][Ee][Ss] | [Oo][Nn]) ci=1 ;; esac

source scripts/test-deps.sh

options=()
if [ "$quick" -eq 1 ]; then
  echo "==> quick tier: unit, memory, toy (no containers, no store servers)"
  options+=(-m "not realbroker and not store")
else
  if [ "$setup" -eq 1 ] && [ "$(id -u)" -eq 0 ] && [ -f /etc/debian_version ] \
    && [ "${UNIMQ_TEST_BROKERS:-containers}" != external ]; then
    echo "==> machine set-up (scripts/setup-machine.sh: Docker, broker images, Redis, PostgreSQL)"
    bash scripts/setup-machine.sh
  fi
  if ! bash scripts/check-machine.sh && [ "$ci" -eq 1 ]; then
    echo "CI=true: every suite must run; stopping before the tests." >&2
    exit 1
  fi
  if [ "$ci" -eq 1 ] && [ ${#pytest_args[@]} -eq 0 ]; then
    # The whole run under CI: every tier must pass tests, and the log says where time goes.
    options+=(--unimq-require-tiers=quick,store,realbroker --durations=30)
  fi
fi

workers=${UNIMQ_TEST_WORKERS:-2}
if ! [[ "$workers" =~ ^[0-9]+$ ]]; then
  echo "UNIMQ_TEST_WORKERS must be a whole number, got '$workers'" >&2
  exit 2
fi
if [ "$workers" -gt 1 ]; then
  options+=(-n "$workers" --dist loadgroup)
fi

echo "==> python -m pytest ${options[*]} ${pytest_args[*]}"
rc=0
python -m pytest "${options[@]}" "${pytest_args[@]}" || rc=$?
if [ "$rc" -eq 5 ]; then
  # pytest's "no tests collected": never a silent pass, and named for what it is.
  echo "==> no tests ran: pytest collected or selected none (exit 5); check the arguments" >&2
  if [ "$ci" -eq 1 ]; then exit 1; fi
fi
exit "$rc"
