"""Registers ``toy://`` through the ``unimq_register_transports`` hook."""

from __future__ import annotations

from unimq.hookspecs import hookimpl
from unimq.plugins import TransportRegistry


@hookimpl
def unimq_register_transports(registry: TransportRegistry) -> None:
    from .transport import ToyTransport

    registry.add("toy", ToyTransport, "toy third-party transport (tests)")
