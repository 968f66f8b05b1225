"""What each kombu transport can do, stated once: the capabilities unimq declares for it.

kombu gives one API over brokers that differ a lot; these profiles say honestly what unimq
gets from each through kombu (see docs/backends/kombu.md):

- ``redis``: lists for queues and a direct exchange whose bindings live in Redis, so every
  process sees the same routing. No native delay in Redis: the adapter keeps delayed messages
  in a sorted set and moves them when due (any connected unimq process does), so delays are
  unlimited. Durable only as far as the server persists (AOF with ``appendfsync always``).
- ``sqs``: native ``DelaySeconds`` up to 15 minutes (the core re-hops longer delays); standard
  queues do not keep order; 256 KiB per SQS message, of which a body may use 128 KiB
  (kombu base64-encodes it into a JSON envelope). kombu keeps SQS exchange bindings in the
  process only, so the adapter routes to the group queues itself (one queue per group, found
  by name prefix). SQS stores every message it accepted redundantly: durable.
- ``memory``: kombu's in-process transport, for tests of code written against kombu.
"""

from __future__ import annotations

from dataclasses import dataclass

from unimq.transport import Capabilities

SQS_MAX_DELAY = 900.0
# SQS takes 256 KiB per message, and kombu encodes the body twice: base64 inside a JSON envelope
# with the headers, then the whole envelope base64 again (its ``sqs_base64_encoding`` option,
# on by default). 128 KiB of body is 171 KiB once and 228 KiB twice, which leaves about 21 KiB
# (before the second encoding) for the headers and the envelope. (160 KiB, declared before,
# came to 284 KiB: SQS refused it with MessageTooLong, found by the conformance case.)
SQS_MAX_MESSAGE = 128 * 1024


@dataclass(frozen=True)
class Profile:
    kombu_scheme: str
    description: str
    capabilities: Capabilities
    routing: str  # "exchange": kombu's direct exchange routes; "prefix": the adapter fans out
    delay: str  # "sorted-set": the adapter's Redis delay set; "native": SQS DelaySeconds
    publish_connections: int = 1  # the default of the option of that name


_REDIS = Capabilities(max_delay=None, ordering=False, broadcast=True, durable=False)

PROFILES: dict[str, Profile] = {
    "redis": Profile("redis", "Redis through kombu", _REDIS, "exchange", "sorted-set"),
    "rediss": Profile("rediss", "Redis (TLS) through kombu", _REDIS, "exchange", "sorted-set"),
    "sqs": Profile(
        "sqs",
        "Amazon SQS through kombu",
        Capabilities(
            max_delay=SQS_MAX_DELAY,
            ordering=False,
            broadcast=True,
            durable=True,
            max_message_size=SQS_MAX_MESSAGE,
        ),
        "prefix",
        "native",
        publish_connections=4,
    ),
}
