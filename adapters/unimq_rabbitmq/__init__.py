"""unimq adapter for rabbitmq (see docs/backends/rabbitmq.md)."""
