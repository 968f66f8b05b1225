"""Registers ``memory://`` through the same hook a third-party adapter uses."""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..plugins import TransportRegistry


@hookimpl
def unimq_register_transports(registry: TransportRegistry) -> None:
    from .transport import MemoryTransport

    registry.add("memory", MemoryTransport, "in-process backend (tests, demos, single process)")
