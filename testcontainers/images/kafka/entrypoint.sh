#!/bin/bash
# Start a single-node KRaft Kafka: apply KAFKA_* env overrides to
# server.properties (same convention as the official apache/kafka image),
# format the storage if needed, then run kafka.Kafka in the foreground.
set -euo pipefail
KAFKA_HOME=/opt/kafka
PROPS=$KAFKA_HOME/config/server.properties
export CLUSTER_ID="${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}"

# env vars that configure the JVM/scripts, not the broker
reserved=" KAFKA_VERSION KAFKA_HEAP_OPTS KAFKA_LOG4J_OPTS KAFKA_OPTS KAFKA_JMX_OPTS KAFKA_JVM_PERFORMANCE_OPTS KAFKA_GC_LOG_OPTS KAFKA_LOG4J_ROOT_LOGLEVEL KAFKA_LOG4J_LOGGERS KAFKA_TOOLS_LOG4J_LOGLEVEL KAFKA_JMX_HOSTNAME KAFKA_JMX_PORT "
set_prop() {  # set_prop key value
  local tmp; tmp=$(mktemp)
  grep -v -E "^[[:space:]]*$(printf '%s' "$1" | sed 's/[.[\*^$]/\\&/g')[[:space:]]*=" "$PROPS" >"$tmp" || true
  printf '%s=%s\n' "$1" "$2" >>"$tmp"
  cat "$tmp" >"$PROPS"; rm -f "$tmp"
}
while IFS='=' read -r name _; do
  case "$name" in KAFKA_*) ;; *) continue ;; esac
  case "$reserved" in *" $name "*) continue ;; esac
  key=$(printf '%s' "${name#KAFKA_}" | tr 'A-Z' 'a-z' | sed -e 's/___/-/g' -e 's/__/\x01/g' -e 's/_/./g' -e 's/\x01/_/g')
  set_prop "$key" "${!name}"
done < <(env)
# a listener list given only as advertised listeners binds on all interfaces
if [ -n "${KAFKA_ADVERTISED_LISTENERS:-}" ] && [ -z "${KAFKA_LISTENERS:-}" ]; then
  set_prop listeners "$(echo "$KAFKA_ADVERTISED_LISTENERS" | sed -e 's|://[^:]*:|://0.0.0.0:|g'),CONTROLLER://localhost:9093"
fi

CP="$KAFKA_HOME/libs/*"
HEAP="${KAFKA_HEAP_OPTS:--Xms256m -Xmx256m}"
PERF="${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExitOnOutOfMemoryError -XX:MaxDirectMemorySize=256m -Djava.awt.headless=true}"
LOG4J="${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$KAFKA_HOME/config/log4j2.properties}"

echo "===> unimq-kafka $KAFKA_VERSION: cluster id $CLUSTER_ID"
grep -v '^#' "$PROPS" | sed '/^$/d; s/^/     /'
# shellcheck disable=SC2086
java -Xmx128m -XX:TieredStopAtLevel=1 $LOG4J -cp "$CP" kafka.tools.StorageTool \
     format --ignore-formatted -t "$CLUSTER_ID" -c "$PROPS"
# shellcheck disable=SC2086
exec java $HEAP $PERF $LOG4J ${KAFKA_OPTS:-} -cp "$CP" kafka.Kafka "$PROPS"
