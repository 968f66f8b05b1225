#!/bin/sh
# Runs RabbitMQ in the foreground as the rabbitmq user, as PID 1's direct
# exec (no su/wrapper in between), so `docker stop`'s SIGTERM reaches
# rabbitmq-server's own handler and the node shuts down cleanly.
set -e
mkdir -p /var/lib/rabbitmq /var/log/rabbitmq /run/rabbitmq
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq /run/rabbitmq
cd /var/lib/rabbitmq
export HOME=/var/lib/rabbitmq
exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server
