"""Transports that misbehave on purpose, registered by hand for error-path tests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from unimq.errors import AuthenticationError
from unimq.hookspecs import hookimpl
from unimq.plugins import TransportRegistry, register_plugin
from unimq.transport import Capabilities, OutgoingMessage, SubscriptionSpec, TransportContext
from unimq.url import BrokerURL


class _Base:
    capabilities = Capabilities(ordering=False, broadcast=False, max_delay=0)

    def __init__(
        self, url: BrokerURL, options: Mapping[str, Any], context: TransportContext
    ) -> None:
        self.url = url

    async def close(self) -> None:
        return None

    async def publish(self, message: OutgoingMessage) -> None:
        return None

    async def subscribe(self, spec: SubscriptionSpec) -> Any:
        raise NotImplementedError


class HangingTransport(_Base):
    """A broker that never answers (a firewall dropping packets)."""

    async def connect(self) -> None:
        await asyncio.sleep(3600)


class RefusingTransport(_Base):
    """A broker that refuses the credentials (and whose client puts the password in the error)."""

    async def connect(self) -> None:
        raise AuthenticationError(f"ACCESS_REFUSED for user {self.url.username!r}")


class ExplodingTransport(_Base):
    """A client library raising its own exception type, message containing the password."""

    async def connect(self) -> None:
        password = self.url.password.get_secret_value() if self.url.password else ""
        raise OSError(f"connection to {self.url.host} failed (auth {password})")


class _Plugin:
    @hookimpl
    def unimq_register_transports(self, registry: TransportRegistry) -> None:
        registry.add("hang", HangingTransport, "never connects")
        registry.add("refuse", RefusingTransport, "refuses credentials")
        registry.add("explode", ExplodingTransport, "raises a library error")


_registered = False


def install() -> None:
    global _registered
    if not _registered:
        register_plugin(_Plugin(), name="unimq-test-fakes")
        _registered = True
