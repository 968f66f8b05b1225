"""Deliveries that are held on purpose until a time: counted as delayed, not as in flight.

An ordered subscriber retrying in place keeps the failed delivery (and the ones queued behind it
under the same key) unsettled while it waits for the backoff; a delivery that arrived a little
early is held until due. ``Broker.drain`` must not wait for these (they are "delayed messages
not yet due"), and on a virtual clock it could not: they wait for ``clock.advance``. Pipelines
register here per clock, and the memory backend asks how many deliveries are parked.
"""

from __future__ import annotations

import weakref
from typing import Protocol


class ParkingSource(Protocol):
    def parked_count(self) -> int: ...


_sources: weakref.WeakKeyDictionary[object, weakref.WeakSet[ParkingSource]] = (
    weakref.WeakKeyDictionary()
)


def register(clock: object, source: ParkingSource) -> None:
    _sources.setdefault(clock, weakref.WeakSet()).add(source)


def unregister(clock: object, source: ParkingSource) -> None:
    sources = _sources.get(clock)
    if sources is not None:
        sources.discard(source)


def parked(clock: object) -> int:
    sources = _sources.get(clock)
    return sum(source.parked_count() for source in sources) if sources else 0
