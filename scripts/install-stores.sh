#!/usr/bin/env bash
# Install the servers the idempotency-store tests (tests/contrib) run against: Debian's
# redis-server and postgresql packages. Does nothing when both are already there. For CI
# (run as root) and developer machines (uses sudo when not root).
#
# The tests start their own throwaway servers (127.0.0.1, free ports, temporary directories),
# so the packages' own services are not needed: they are kept from starting during the
# install (policy-rc.d), and nothing here configures or enables them.
set -euo pipefail

need=()
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  need+=(redis-server)
fi
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  need+=(postgresql)
fi
# The kombu+sqs:// tests run ElasticMQ from its jars, which Maven resolves from the machine's
# configured sources (tests/kombu_servers.py): they need a JDK/JRE and Maven.
if ! command -v java >/dev/null 2>&1; then
  need+=(default-jre-headless)
fi
if ! command -v mvn >/dev/null 2>&1; then
  need+=(maven)
fi
if [ ${#need[@]} -eq 0 ]; then
  echo "==> redis-server, PostgreSQL, java and mvn are installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install-stores.sh: need root (or sudo) to install: ${need[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-stores.sh: no apt-get; install ${need[*]} with this system's package manager" >&2
  exit 1
fi

echo "==> installing ${need[*]}"
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
  # Keep the packages' services from starting: the tests run their own servers.
  printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
  "${as_root[@]}" chmod 755 "$policy"
  added_policy=1
fi
cleanup() {
  if [ "$added_policy" -eq 1 ]; then "${as_root[@]}" rm -f "$policy"; fi
}
trap cleanup EXIT

"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${need[@]}"
echo "==> installed: ${need[*]}"
