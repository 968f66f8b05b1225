"""Registers ``kombu+<transport>://`` through the ``unimq`` entry-point group.

kombu is imported only when a transport is created, so an application that does not use it
does not need it installed.
"""

from __future__ import annotations

from unimq.hookspecs import hookimpl
from unimq.plugins import TransportRegistry, lazy_transport

from .profiles import PROFILES

create_transport = lazy_transport("kombu", "kombu", "kombu", "unimq_kombu.transport:KombuTransport")


@hookimpl
def unimq_register_transports(registry: TransportRegistry) -> None:
    for name, profile in PROFILES.items():
        registry.add(f"kombu+{name}", create_transport, profile.description, name="kombu")
