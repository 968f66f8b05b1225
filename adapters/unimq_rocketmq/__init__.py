"""unimq adapter for rocketmq (see docs/backends/rocketmq.md)."""
