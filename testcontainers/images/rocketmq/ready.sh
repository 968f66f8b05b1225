#!/bin/bash
# Exit 0 when the name server (9876), broker (10911) and proxy gRPC port listen.
for p in 9876 10911 "${ROCKETMQ_GRPC_PORT:-8081}"; do
  (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || exit 1
done
exit 0
