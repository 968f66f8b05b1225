#!/bin/bash
# unimq RocketMQ test container: name server + proxy in local mode (with the
# embedded broker). Environment:
#   ROCKETMQ_GRPC_PORT     proxy gRPC port (default 8081). In local mode the
#                          proxy answers route queries with brokerIP1 (127.0.0.1)
#                          and this port, so a client outside the container needs
#                          the same port number published on the host.
#   ROCKETMQ_NAMESRV_HEAP, ROCKETMQ_BROKER_HEAP   JVM heap flags
set -uo pipefail
. /opt/rocketmq/jvm.sh
mkdir -p /var/log/rocketmq /var/lib/rocketmq/store
GRPC_PORT="${ROCKETMQ_GRPC_PORT:-8081}"
PROXY_JSON=/var/lib/rocketmq/rmq-proxy.json
sed -E "s/(\"grpcServerPort\"[[:space:]]*:[[:space:]]*)[0-9]+/\1$GRPC_PORT/" \
    "$ROCKETMQ_HOME/conf/rmq-proxy.json" >"$PROXY_JSON"
NAMESRV_HEAP="${ROCKETMQ_NAMESRV_HEAP:--Xms64m -Xmx128m}"
BROKER_HEAP="${ROCKETMQ_BROKER_HEAP:--Xms256m -Xmx512m -XX:MaxDirectMemorySize=256m}"

ns_pid=""; px_pid=""
shutdown() {
  echo "===> unimq-rocketmq: stopping"
  # both JVMs flush their state in shutdown hooks; stop them in parallel
  [ -n "$px_pid" ] && kill -TERM "$px_pid" 2>/dev/null
  [ -n "$ns_pid" ] && kill -TERM "$ns_pid" 2>/dev/null
  wait
  exit 0
}
trap shutdown TERM INT

echo "===> unimq-rocketmq $ROCKETMQ_VERSION: starting name server"
# shellcheck disable=SC2086
java $NAMESRV_HEAP $RMQ_JAVA_COMMON -Drmq.logback.configurationFile=$ROCKETMQ_HOME/conf/rmq.logback.xml \
     -Drmq.log.name=namesrv -cp "$RMQ_CP" org.apache.rocketmq.namesrv.NamesrvStartup &
ns_pid=$!
for _ in $(seq 1 240); do
  (exec 3<>/dev/tcp/127.0.0.1/9876) 2>/dev/null && break
  kill -0 "$ns_pid" 2>/dev/null || { echo "name server exited" >&2; exit 1; }
  sleep 0.25
done

echo "===> unimq-rocketmq: starting proxy (local mode, gRPC port $GRPC_PORT) with embedded broker"
# shellcheck disable=SC2086
java $BROKER_HEAP $RMQ_JAVA_COMMON -Drmq.logback.configurationFile=$ROCKETMQ_HOME/conf/rmq.logback.xml \
     -Drmq.log.name=proxy -cp "$RMQ_CP" org.apache.rocketmq.proxy.ProxyStartup \
     -pm local -pc "$PROXY_JSON" -bc "$ROCKETMQ_HOME/conf/broker.conf" -n 127.0.0.1:9876 &
px_pid=$!

# exit (and let docker see it) as soon as either JVM dies
wait -n "$ns_pid" "$px_pid"
rc=$?
echo "===> unimq-rocketmq: a JVM exited (rc=$rc); stopping the other" >&2
kill -TERM "$ns_pid" "$px_pid" 2>/dev/null
wait
exit 1
