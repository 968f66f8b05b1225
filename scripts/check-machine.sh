#!/usr/bin/env bash
# Check, without changing anything, that this machine can run every test suite: Docker and the
# broker images for the real-broker tier, redis-server and PostgreSQL for the store tier.
# Prints nothing and exits 0 when all is there; otherwise prints ONE block that lists what is
# missing and the one command that provides it, and exits 1.
#
# Honours the fixtures' settings: UNIMQ_TEST_BROKERS=external (then the broker URLs are checked
# instead of Docker), UNIMQ_TEST_IMAGES_ENV and UNIMQ_TEST_*_IMAGE (docs/testing.md).
set -uo pipefail
cd "$(dirname "$0")/.."

missing=()
mode="${UNIMQ_TEST_BROKERS:-containers}"

if [ "$mode" = external ]; then
  for kind in RABBITMQ KAFKA ROCKETMQ; do
    var="UNIMQ_TEST_${kind}_URL"
    [ -n "${!var:-}" ] || missing+=("UNIMQ_TEST_BROKERS=external but $var is not set")
  done
elif ! command -v docker >/dev/null 2>&1; then
  missing+=("Docker (no docker command): the real-broker tests need it")
elif ! timeout 30 docker info >/dev/null 2>&1; then
  missing+=("a running Docker engine that this user may use ('docker info' fails)")
else
  images_env="${UNIMQ_TEST_IMAGES_ENV:-testcontainers/.images.env}"
  declare -A image=()
  if [ "$images_env" != none ] && [ -f "$images_env" ]; then
    while IFS='=' read -r key value; do
      image[$key]="$value"
    done < <(sed -n 's/^[[:space:]]*\(export[[:space:]]\+\)\?\(UNIMQ_TEST_[A-Z0-9_]*_IMAGE\)=\(.*\)$/\2=\3/p' "$images_env" | tr -d "\"'")
  fi
  for kind in RABBITMQ KAFKA ROCKETMQ; do
    var="UNIMQ_TEST_${kind}_IMAGE"
    if [ -n "${!var:-}" ]; then image[$var]="${!var}"; fi
  done
  if [ ${#image[@]} -eq 0 ]; then
    missing+=("the broker images for this checkout (no ${images_env})")
  fi
  for var in "${!image[@]}"; do
    if ! docker image inspect "${image[$var]}" >/dev/null 2>&1; then
      missing+=("broker image ${image[$var]} ($var)")
    fi
  done
fi

if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  missing+=("redis-server: the Redis store tests need it")
fi
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  missing+=("PostgreSQL (initdb): the PostgreSQL store tests need it")
fi

if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  missing+=("java and mvn: the kombu+sqs:// tests run ElasticMQ from jars Maven resolves")
fi

[ ${#missing[@]} -eq 0 ] && exit 0

{
  echo "================================================================================"
  echo "This machine cannot run every suite yet. Missing:"
  for m in "${missing[@]}"; do echo "  - $m"; done
  echo
  if [ "$mode" = external ]; then
    echo "Set the UNIMQ_TEST_*_URL variables (docs/testing.md, 'Against external brokers')."
  elif [ -f /etc/debian_version ]; then
    echo "One command provides all of it (Debian; installs packages, starts dockerd, builds"
    echo "the images; a second run takes about a second):"
    echo
    echo "    sudo bash scripts/setup-machine.sh"
    echo
    echo "(As root, 'bash scripts/test.sh' runs it by itself.)"
  else
    echo "Not Debian: install Docker, redis-server and PostgreSQL with this system's package"
    echo "manager, start Docker, then build the images (needs debootstrap and maven):"
    echo
    echo "    sudo bash testcontainers/build-images.sh"
  fi
  echo "Until then the tests that need them are skipped, with the reason (failed under CI=true)."
  echo "================================================================================"
} >&2
exit 1
