#!/usr/bin/env bash
# Build (or reuse) the broker images the real-broker tests run, without any
# image registry, one image per broker version listed in images/versions.env:
#
#   unimq-test/base:<suite>-<hash>        Debian minbase from debootstrap, docker import
#   unimq-test/jre:<hash>                 base (bookworm) + openjdk-<N>-jre-headless
#   unimq-test/rabbitmq:<version>-<hash>  base (<suite>) + Debian's rabbitmq-server
#   unimq-test/kafka:<version>-<hash>     jre + Kafka jars from Maven Central (KRaft)
#   unimq-test/rocketmq:<version>-<hash>  jre + RocketMQ 5 namesrv/proxy(local)/tools jars
#
# <hash> is a content hash of this script, images/versions.env and the
# image's own directory (plus its parent image's tag and its version), so a
# second run finds every image with `docker image inspect` and builds nothing.
#
# Writes testcontainers/.images.env (export UNIMQ_*_IMAGE=...), which the
# pytest fixtures read automatically (see docs/testing.md):
#   UNIMQ_TEST_<BROKER>_IMAGE              the primary (newest) version
#   UNIMQ_TEST_<BROKER>_IMAGE_<VERSION>    every version, dots as underscores
#
# Usage: build-images.sh [--force] [--no-cleanup] [NAME...]
#   NAME: rabbitmq kafka rocketmq (default: all three)
#   --force       rebuild even when the tag exists
#   --no-cleanup  keep older unimq-test/* tags (default: remove them)
# Environment:
#   UNIMQ_DEBIAN_MIRROR  Debian mirror for debootstrap (default: the first
#                        Debian archive URI of the host's configured apt
#                        sources, /etc/apt/sources.list and
#                        /etc/apt/sources.list.d/*.list|*.sources; there is no
#                        built-in fallback: the build fails without one)
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
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
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

# cleanup_old NAME KEEP...: remove the tags of repo unimq-test/NAME that are
# not among KEEP (call it after building every version of NAME this run needs)
cleanup_old() {
  local name="$1" t k keep; shift
  [ "$CLEANUP" = 1 ] || return 0
  for t in $(docker images --format '{{.Repository}}:{{.Tag}}' "unimq-test/$name"); do
    keep=0
    for k in "$@"; do [ "$t" = "$k" ] && keep=1; done
    if [ "$keep" = 0 ]; then
      log "removing outdated image $t"
      docker rmi "$t" >/dev/null 2>&1 || true
    fi
  done
}

# Debian archive (and security archive) for debootstrap: UNIMQ_DEBIAN_MIRROR,
# else the host's configured apt sources (images/base/debian-mirror.sh). Never
# a built-in host name: without a configured source the build stops here.
DEBIAN_MIRROR=""
DEBIAN_SECURITY=""
debian_mirror() {
  [ -n "$DEBIAN_MIRROR" ] && return 0
  if [ -n "${UNIMQ_DEBIAN_MIRROR:-}" ]; then
    DEBIAN_MIRROR="${UNIMQ_DEBIAN_MIRROR%/}"
    DEBIAN_SECURITY="${UNIMQ_DEBIAN_SECURITY_MIRROR:-}"
    return 0
  fi
  local out
  out=$(bash "$IMAGES_DIR/base/debian-mirror.sh") \
    || die "no Debian mirror: configure a Debian archive in /etc/apt/sources.list or /etc/apt/sources.list.d/, or set UNIMQ_DEBIAN_MIRROR"
  DEBIAN_MIRROR=$(sed -n 's/^mirror=//p' <<<"$out")
  DEBIAN_SECURITY=$(sed -n 's/^security=//p' <<<"$out")
}

# env_suffix 4.0.5 -> 4_0_5 (the .images.env variable suffix of a version)
env_suffix() { echo "$1" | tr 'a-z.-' 'A-Z__'; }

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
# build_base SUITE: sets BASE_TAG (and records it in BASE_TAGS)
declare -A BASE_TAGS=()
build_base() {
  local suite="$1"
  if [ -n "${BASE_TAGS[$suite]:-}" ]; then BASE_TAG="${BASE_TAGS[$suite]}"; return; fi
  local h; h=$(hash_inputs "debootstrap-$suite" "$IMAGES_DIR/base")
  BASE_TAG="unimq-test/base:$suite-$h"
  BASE_TAGS[$suite]="$BASE_TAG"
  if [ "$FORCE" = 0 ] && image_exists "$BASE_TAG"; then log "reuse $BASE_TAG"; return; fi
  command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap; prepare-machine.sh does)"
  debian_mirror
  local mirror="$DEBIAN_MIRROR"
  local root="$BUILD_DIR/rootfs-$suite"
  local dlog="$BUILD_DIR/logs/debootstrap-$suite.log"
  rm -rf "$root"; mkdir -p "$BUILD_DIR/logs"
  log "debootstrap --variant=minbase $suite from $mirror"
  local t=$(date +%s)
  if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$dlog" 2>&1; then
    tail -30 "$dlog" >&2
    die "debootstrap $suite failed (log: $dlog)"
  fi
  # container-friendly tweaks: no service starts from postinst, no docs, small apt
  cp "$IMAGES_DIR/base/policy-rc.d" "$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"
  cp "$IMAGES_DIR/base/apt-container.conf" "$root/etc/apt/apt.conf.d/99unimq-container"
  cp "$IMAGES_DIR/base/dpkg-nodoc.cfg" "$root/etc/dpkg/dpkg.cfg.d/99unimq-nodoc"
  # the host's mirror, the updates suite and (when the host has one) the security archive
  echo "deb $mirror $suite main" >"$root/etc/apt/sources.list"
  echo "deb $mirror $suite-updates main" >>"$root/etc/apt/sources.list"
  if [ -n "$DEBIAN_SECURITY" ]; then echo "deb $DEBIAN_SECURITY $suite-security main" >>"$root/etc/apt/sources.list"; fi
  rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
  log "debootstrap $suite done in $(( $(date +%s) - t ))s; docker import -> $BASE_TAG"
  tar -C "$root" --numeric-owner -c . | docker import \
      -c 'ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive' -c 'CMD ["/bin/bash"]' \
      - "$BASE_TAG" >/dev/null || die "docker import failed"
  rm -rf "$root"
}

# ------------------------------------------------------------------- jre --
build_jre() {
  build_base "$DEBIAN_SUITE"
  local h; h=$(hash_inputs "$BASE_TAG" "$IMAGES_DIR/jre")
  JRE_TAG="unimq-test/jre:$h"
  if [ "$FORCE" = 0 ] && image_exists "$JRE_TAG"; then log "reuse $JRE_TAG"; return; fi
  docker_build "$JRE_TAG" "$IMAGES_DIR/jre" --build-arg "BASE=$BASE_TAG" --build-arg "JAVA_MAJOR=$JAVA_MAJOR"
  cleanup_old jre "$JRE_TAG"
}

# Every image built or reused in this run, per broker: "VERSION TAG" lines.
declare -A BUILT=()

# -------------------------------------------------------------- rabbitmq --
# build_rabbitmq VERSION@SUITE
build_rabbitmq() {
  local version="${1%@*}" suite="$DEBIAN_SUITE"
  case "$1" in *@*) suite="${1#*@}" ;; esac
  build_base "$suite"
  local h; h=$(hash_inputs "$BASE_TAG:$version" "$IMAGES_DIR/rabbitmq")
  local tag="unimq-test/rabbitmq:$version-$h"
  BUILT[rabbitmq]+="$version $tag"$'\n'
  if [ "$FORCE" = 0 ] && image_exists "$tag"; then log "reuse $tag"; return; fi
  local t=$(date +%s)
  docker_build "$tag" "$IMAGES_DIR/rabbitmq" --build-arg "BASE=$BASE_TAG" \
      --build-arg "RABBITMQ_UPSTREAM_VERSION=$version"
  log "rabbitmq $version ($suite) built in $(( $(date +%s) - t ))s"
}

# ----------------------------------------------------------------- kafka --
build_kafka() {
  local version="$1"
  local h; h=$(hash_inputs "$JRE_TAG:$version" "$IMAGES_DIR/kafka")
  local tag="unimq-test/kafka:$version-$h"
  BUILT[kafka]+="$version $tag"$'\n'
  if [ "$FORCE" = 0 ] && image_exists "$tag"; then log "reuse $tag"; return; fi
  local t=$(date +%s)
  local ctx="$BUILD_DIR/kafka-$version"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -r "$IMAGES_DIR/kafka/." "$ctx/"
  maven_fetch "kafka-$version" "$ctx" "$ctx/libs" -Dkafka.version="$version" -Dlog4j2.version="$LOG4J2_VERSION"
  docker_build "$tag" "$ctx" --build-arg "JRE=$JRE_TAG" --build-arg "KAFKA_VERSION=$version"
  rm -rf "$ctx"
  log "kafka $version built in $(( $(date +%s) - t ))s"
}

# -------------------------------------------------------------- rocketmq --
build_rocketmq() {
  local version="$1"
  local h; h=$(hash_inputs "$JRE_TAG:$version" "$IMAGES_DIR/rocketmq")
  local tag="unimq-test/rocketmq:$version-$h"
  BUILT[rocketmq]+="$version $tag"$'\n'
  if [ "$FORCE" = 0 ] && image_exists "$tag"; then log "reuse $tag"; return; fi
  local t=$(date +%s)
  local ctx="$BUILD_DIR/rocketmq-$version"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -r "$IMAGES_DIR/rocketmq/." "$ctx/"
  maven_fetch "rocketmq-$version" "$ctx" "$ctx/lib" -Drocketmq.version="$version"
  docker_build "$tag" "$ctx" --build-arg "JRE=$JRE_TAG" --build-arg "ROCKETMQ_VERSION=$version"
  rm -rf "$ctx"
  log "rocketmq $version built in $(( $(date +%s) - t ))s"
}

# ------------------------------------------------------------------ main --
mkdir -p "$BUILD_DIR"
log "building/reusing: ${WANT[*]}"
want() { local w; for w in "${WANT[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }
versions_of() {  # versions_of NAME -> the NAME_VERSIONS list from versions.env
  local var; var="$(echo "$1" | tr 'a-z' 'A-Z')_VERSIONS"
  [ -n "${!var:-}" ] || die "images/versions.env sets no $var"
  echo "${!var}"
}
if want kafka || want rocketmq; then build_jre; fi
for name in rabbitmq kafka rocketmq; do
  want "$name" || continue
  for v in $(versions_of "$name"); do "build_$name" "$v"; done
  # shellcheck disable=SC2046
  cleanup_old "$name" $(awk '{print $2}' <<<"${BUILT[$name]}")
done
# shellcheck disable=SC2046
cleanup_old base "${BASE_TAGS[@]}" $([ "${#WANT[@]}" -lt 3 ] && docker images --format '{{.Repository}}:{{.Tag}}' unimq-test/base)

# .images.env: keep entries of brokers not built in this run; per broker the
# primary (first listed) version as UNIMQ_TEST_<NAME>_IMAGE and every version
# as UNIMQ_TEST_<NAME>_IMAGE_<VERSION>
tmp="$ENV_OUT.tmp.$$"
{
  echo "# Written by testcontainers/build-images.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ); do not edit."
  [ -f "$ENV_OUT" ] && grep -E '^export UNIMQ_TEST_[A-Z]+_IMAGE(_[A-Z0-9_]+)?=' "$ENV_OUT" \
      | grep -v -E "UNIMQ_TEST_($(IFS='|'; echo "${WANT[*]}" | tr 'a-z' 'A-Z'))_IMAGE[_=]" || true
  for name in rabbitmq kafka rocketmq; do
    want "$name" || continue
    up=$(echo "$name" | tr 'a-z' 'A-Z')
    first=1
    while read -r v tag; do
      [ -n "$v" ] || continue
      [ "$first" = 1 ] && echo "export UNIMQ_TEST_${up}_IMAGE=$tag"
      first=0
      echo "export UNIMQ_TEST_${up}_IMAGE_$(env_suffix "$v")=$tag"
    done <<<"${BUILT[$name]}"
  done
} >"$tmp"
mv "$tmp" "$ENV_OUT"
log "wrote $ENV_OUT:"
grep '^export' "$ENV_OUT" | sed 's/^/    /'
log "done in $(( $(date +%s) - T0 ))s"
