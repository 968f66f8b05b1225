"""unimq adapter for kafka (see docs/backends/kafka.md)."""
