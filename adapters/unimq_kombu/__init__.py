"""unimq over kombu: every kombu transport (Redis, Amazon SQS, ...) as ``kombu+<transport>://``."""
