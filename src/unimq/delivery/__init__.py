"""The delivery pipeline: what happens to a message between the broker and its handler.

- :mod:`.outcome` — how a handling ended (ack, retry, dead letter, ...) and the one ``decide``;
- :mod:`.stages` — hold/forward, decode, idempotency, invoke, in-place retry: composed once per
  subscriber;
- :mod:`.settle` — carries an outcome out, durably and exactly once;
- :mod:`.runtime` — workers, slots, per-key lanes and shutdown.

The header bookkeeping they share is :mod:`unimq.envelope`.
"""
