#!/usr/bin/env bash
# Build (or reuse) the broker images the real-broker tests run, without any
# image registry:
#
#   unimq-test/base:<hash>      Debian minbase from debootstrap, docker import
#   unimq-test/jre:<hash>       base + openjdk-<N>-jre-headless
#   unimq-test/rabbitmq:<hash>  base + Debian's rabbitmq-server
#   unimq-test/kafka:<hash>     jre  + Kafka 4.x jars from Maven Central (KRaft)
#   unimq-test/rocketmq:<hash>  jre  + RocketMQ 5.3 namesrv/proxy(local)/tools jars
#
# <hash> is a content hash of this script, images/versions.env and the
# image's own directory (plus its parent image's tag), so a second run finds
# every image with `docker image inspect` and builds nothing.
#
# Writes testcontainers/.images.env (export UNIMQ_*_IMAGE=...), which the
# pytest fixtures read automatically (see docs/testing.md).
#
# Usage: build-images.sh [--force] [--no-cleanup] [NAME...]
#   NAME: rabbitmq kafka rocketmq (default: all three)
#   --force       rebuild even when the tag exists
#   --no-cleanup  keep older unimq-test/* tags (default: remove them)
# Environment:
#   UNIMQ_DEBIAN_MIRROR  Debian mirror for debootstrap (default: the first
#                        deb URI in /etc/apt/sources.list*, else deb.debian.org)
#   UNIMQ_BUILD_DIR      scratch dir (default: testcontainers/build)
#   UNIMQ_MAVEN_REPO_LOCAL  Maven local repository (default: Maven's, ~/.m2/repository)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGES_DIR="$HERE/images"
BUILD_DIR="${UNIMQ_BUILD_DIR:-$HERE/build}"
ENV_OUT="$HERE/.images.env"
export DOCKER_BUILDKIT=0   # the classic builder resolves FROM against local images only

# shellcheck source=images/versions.env
. "$IMAGES_DIR/versions.env"

T0=$(date +%s)
log() { printf '[build-images %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { printf '[build-images] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "[build-images] FAILED (exit $rc) after $(( $(date +%s) - T0 ))s" >&2; fi' EXIT

FORCE=0
CLEANUP=1
WANT=()
for a in "$@"; do
  case "$a" in
    --force) FORCE=1 ;;
    --no-cleanup) CLEANUP=0 ;;
    rabbitmq|kafka|rocketmq) WANT+=("$a") ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) die "unknown argument: $a" ;;
  esac
done
[ ${#WANT[@]} -eq 0 ] && WANT=(rabbitmq kafka rocketmq)

command -v docker >/dev/null || die "docker CLI not found (run testcontainers/prepare-machine.sh)"
docker info >/dev/null 2>&1 || die "Docker engine not reachable ('docker info' fails); start dockerd (testcontainers/prepare-machine.sh does)"

# ---------------------------------------------------------------- helpers --

# hash_inputs PARENT_TAG DIR... -> 16 hex chars over this script, versions.env,
# the parent tag and every file under DIR (path + content).
hash_inputs() {
  local parent="$1"; shift
  {
    echo "parent=$parent"
    sha256sum "$HERE/build-images.sh" "$IMAGES_DIR/versions.env" | awk '{print $1}'
    local d
    for d in "$@"; do
      (cd "$d" && find . -type f ! -name '*~' -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
    done
  } | sha256sum | cut -c1-16
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# remove older tags of repo unimq-test/NAME except KEEP
cleanup_old() {
  local name="$1" keep="$2" t
  [ "$CLEANUP" = 1 ] || return 0
  for t in $(docker images --format '{{.Repository}}:{{.Tag}}' "unimq-test/$name"); do
    if [ "$t" != "$keep" ]; then
      log "removing outdated image $t"
      docker rmi "$t" >/dev/null 2>&1 || true
    fi
  done
}

debian_mirror() {
  if [ -n "${UNIMQ_DEBIAN_MIRROR:-}" ]; then echo "$UNIMQ_DEBIAN_MIRROR"; return; fi
  local m=""
  if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
    m=$(awk '/^URIs:/ {for (i=2;i<=NF;i++) if ($i !~ /security/) {print $i; exit}}' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  fi
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m=$(awk '$1=="deb" && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i ~ /^(http|https|file):/) {print $i; exit}}' /etc/apt/sources.list | head -1)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

# docker_build TAG CONTEXT [build-args...]
docker_build() {
  local tag="$1" ctx="$2"; shift 2
  local logf="$BUILD_DIR/logs/$(echo "$tag" | tr '/:' '__').log"
  mkdir -p "$BUILD_DIR/logs"
  log "docker build $tag (log: $logf)"
  if ! docker build --network host --label "org.unimq.test.image=local" "$@" -t "$tag" "$ctx" >"$logf" 2>&1; then
    tail -40 "$logf" >&2
    die "docker build of $tag failed (full log: $logf)"
  fi
}

# maven_fetch NAME POM_DIR OUT_DIR -D...: copy runtime deps of POM into OUT_DIR
maven_fetch() {
  local name="$1" pomdir="$2" out="$3"; shift 3
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven; prepare-machine.sh does)"
  local logf="$BUILD_DIR/logs/mvn-$name.log"
  mkdir -p "$BUILD_DIR/logs"
  rm -rf "$out"; mkdir -p "$out"
  log "maven: fetching $name jars from Maven Central (log: $logf)"
  local repo_opt=()
  [ -n "${UNIMQ_MAVEN_REPO_LOCAL:-}" ] && repo_opt=(-Dmaven.repo.local="$UNIMQ_MAVEN_REPO_LOCAL")
  if ! mvn -B -ntp "${repo_opt[@]}" -f "$pomdir/pom.xml" "$@" \
        "org.apache.maven.plugins:maven-dependency-plugin:${MAVEN_DEPENDENCY_PLUGIN_VERSION}:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$out" >"$logf" 2>&1; then
    tail -40 "$logf" >&2
    die "maven fetch for $name failed (full log: $logf)"
  fi
  log "maven: $name: $(ls "$out" | wc -l) jars, $(du -sh "$out" | cut -f1)"
}

# ------------------------------------------------------------------ base --
build_base() {
  local h; h=$(hash_inputs "debootstrap-$DEBIAN_SUITE" "$IMAGES_DIR/base")
  BASE_TAG="unimq-test/base:$h"
  if [ "$FORCE" = 0 ] && image_exists "$BASE_TAG"; then log "reuse $BASE_TAG"; return; fi
  command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap; prepare-machine.sh does)"
  local mirror; mirror=$(debian_mirror)
  local root="$BUILD_DIR/rootfs-$DEBIAN_SUITE"
  rm -rf "$root"; mkdir -p "$BUILD_DIR/logs"
  log "debootstrap --variant=minbase $DEBIAN_SUITE from $mirror"
  local t=$(date +%s)
  if ! debootstrap --variant=minbase "$DEBIAN_SUITE" "$root" "$mirror" >"$BUILD_DIR/logs/debootstrap.log" 2>&1; then
    tail -30 "$BUILD_DIR/logs/debootstrap.log" >&2
    die "debootstrap failed (log: $BUILD_DIR/logs/debootstrap.log)"
  fi
  # container-friendly tweaks: no service starts from postinst, no docs, small apt
  cp "$IMAGES_DIR/base/policy-rc.d" "$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"
  cp "$IMAGES_DIR/base/apt-container.conf" "$root/etc/apt/apt.conf.d/99unimq-container"
  cp "$IMAGES_DIR/base/dpkg-nodoc.cfg" "$root/etc/dpkg/dpkg.cfg.d/99unimq-nodoc"
  # debootstrap writes the host's mirror: keep it, and add the security suite
  echo "deb $mirror $DEBIAN_SUITE main" >"$root/etc/apt/sources.list"
  echo "deb $mirror $DEBIAN_SUITE-updates main" >>"$root/etc/apt/sources.list"
  local sec; sec=$(echo "$mirror" | sed -E 's#/debian/?$#/debian-security#')
  if [ "$sec" != "$mirror" ]; then echo "deb $sec $DEBIAN_SUITE-security main" >>"$root/etc/apt/sources.list"; fi
  rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
  log "debootstrap done in $(( $(date +%s) - t ))s; docker import -> $BASE_TAG"
  tar -C "$root" --numeric-owner -c . | docker import \
      -c 'ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive' -c 'CMD ["/bin/bash"]' \
      - "$BASE_TAG" >/dev/null || die "docker import failed"
  rm -rf "$root"
  cleanup_old base "$BASE_TAG"
}

# ------------------------------------------------------------------- jre --
build_jre() {
  local h; h=$(hash_inputs "$BASE_TAG" "$IMAGES_DIR/jre")
  JRE_TAG="unimq-test/jre:$h"
  if [ "$FORCE" = 0 ] && image_exists "$JRE_TAG"; then log "reuse $JRE_TAG"; return; fi
  docker_build "$JRE_TAG" "$IMAGES_DIR/jre" --build-arg "BASE=$BASE_TAG" --build-arg "JAVA_MAJOR=$JAVA_MAJOR"
  cleanup_old jre "$JRE_TAG"
}

# -------------------------------------------------------------- rabbitmq --
build_rabbitmq() {
  local h; h=$(hash_inputs "$BASE_TAG" "$IMAGES_DIR/rabbitmq")
  RABBITMQ_TAG="unimq-test/rabbitmq:$h"
  if [ "$FORCE" = 0 ] && image_exists "$RABBITMQ_TAG"; then log "reuse $RABBITMQ_TAG"; return; fi
  docker_build "$RABBITMQ_TAG" "$IMAGES_DIR/rabbitmq" --build-arg "BASE=$BASE_TAG" \
      --build-arg "RABBITMQ_UPSTREAM_VERSION=$RABBITMQ_UPSTREAM_VERSION"
  cleanup_old rabbitmq "$RABBITMQ_TAG"
}

# ----------------------------------------------------------------- kafka --
build_kafka() {
  local h; h=$(hash_inputs "$JRE_TAG" "$IMAGES_DIR/kafka")
  KAFKA_TAG="unimq-test/kafka:$h"
  if [ "$FORCE" = 0 ] && image_exists "$KAFKA_TAG"; then log "reuse $KAFKA_TAG"; return; fi
  local ctx="$BUILD_DIR/kafka"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -r "$IMAGES_DIR/kafka/." "$ctx/"
  maven_fetch kafka "$ctx" "$ctx/libs" -Dkafka.version="$KAFKA_VERSION" -Dlog4j2.version="$LOG4J2_VERSION"
  docker_build "$KAFKA_TAG" "$ctx" --build-arg "JRE=$JRE_TAG" --build-arg "KAFKA_VERSION=$KAFKA_VERSION"
  rm -rf "$ctx"
  cleanup_old kafka "$KAFKA_TAG"
}

# -------------------------------------------------------------- rocketmq --
build_rocketmq() {
  local h; h=$(hash_inputs "$JRE_TAG" "$IMAGES_DIR/rocketmq")
  ROCKETMQ_TAG="unimq-test/rocketmq:$h"
  if [ "$FORCE" = 0 ] && image_exists "$ROCKETMQ_TAG"; then log "reuse $ROCKETMQ_TAG"; return; fi
  local ctx="$BUILD_DIR/rocketmq"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -r "$IMAGES_DIR/rocketmq/." "$ctx/"
  maven_fetch rocketmq "$ctx" "$ctx/lib" -Drocketmq.version="$ROCKETMQ_VERSION"
  docker_build "$ROCKETMQ_TAG" "$ctx" --build-arg "JRE=$JRE_TAG" --build-arg "ROCKETMQ_VERSION=$ROCKETMQ_VERSION"
  rm -rf "$ctx"
  cleanup_old rocketmq "$ROCKETMQ_TAG"
}

# ------------------------------------------------------------------ main --
mkdir -p "$BUILD_DIR"
log "building/reusing: ${WANT[*]}"
build_base
want() { local w; for w in "${WANT[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }
if want kafka || want rocketmq; then build_jre; fi
want rabbitmq && build_rabbitmq
want kafka && build_kafka
want rocketmq && build_rocketmq

# .images.env: keep entries for images not built in this run
tmp="$ENV_OUT.tmp.$$"
{
  echo "# Written by testcontainers/build-images.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ); do not edit."
  [ -f "$ENV_OUT" ] && grep -E '^export UNIMQ_[A-Z]+_IMAGE=' "$ENV_OUT" \
      | grep -v -E "UNIMQ_($(IFS='|'; echo "${WANT[*]}" | tr 'a-z' 'A-Z'))_IMAGE=" || true
  want rabbitmq && echo "export UNIMQ_TEST_RABBITMQ_IMAGE=$RABBITMQ_TAG"
  want kafka && echo "export UNIMQ_TEST_KAFKA_IMAGE=$KAFKA_TAG"
  want rocketmq && echo "export UNIMQ_TEST_ROCKETMQ_IMAGE=$ROCKETMQ_TAG"
} >"$tmp"
mv "$tmp" "$ENV_OUT"
log "wrote $ENV_OUT:"
grep '^export' "$ENV_OUT" | sed 's/^/    /'
log "done in $(( $(date +%s) - T0 ))s"
