"""``kombu+<transport>://``: unimq over kombu's ``Connection``/``Producer``/``Consumer``.

kombu's API is synchronous, so each kombu connection lives on a thread of its own
(:class:`~unimq_kombu.worker.ConnectionThread`): one or more for publishing
(:mod:`unimq_kombu.publisher`), one per subscription. The event loop only awaits results.
What each kombu transport can do is in :mod:`unimq_kombu.profiles`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping
from typing import Any

from unimq.errors import ConfigurationError, NotConnectedError, PublishError, UnimqError
from unimq.transport import OutgoingMessage, SubscriptionSpec, TransportContext
from unimq.url import BrokerURL

from .connect import connect_error
from .options import parse_options
from .profiles import PROFILES
from .publisher import Publisher
from .subscription import KombuSubscription

logger = logging.getLogger("unimq.kombu")


class KombuTransport:
    def __init__(self, url: BrokerURL, options: Mapping[str, Any], context: TransportContext):
        name = url.scheme.split("+", 1)[-1]
        profile = PROFILES.get(name)
        if profile is None:
            raise ConfigurationError(f"{url.scheme}:// is not a kombu transport unimq knows")
        self.url = url
        self.profile = profile
        self.capabilities = profile.capabilities
        # URL query options too, as every adapter reads them (keyword options win).
        self.options = parse_options({**url.query_dict(), **options}, profile.publish_connections)
        self.context = context
        self._publishers: list[Publisher] = []
        self._next = itertools.cycle([0])
        self._subscriptions: list[KombuSubscription] = []

    async def connect(self) -> None:
        if self._publishers:
            return
        publishers = [
            Publisher(self.url, self.profile, self.options, index)
            for index in range(self.options.publish_connections)
        ]
        # Opened side by side: each open is a round trip or more on its own thread (on SQS also
        # building a boto3 client), and one after the other they took most of connect_timeout
        # on a busy machine.
        try:
            started = await asyncio.gather(
                *(
                    publisher.start(moves_delays=index == 0 and self.profile.delay == "sorted-set")
                    for index, publisher in enumerate(publishers)
                ),
                return_exceptions=True,
            )
        except BaseException:  # cancelled (connect_timeout): close what opened meanwhile
            await _stop_all(publishers)
            raise
        failures = [outcome for outcome in started if isinstance(outcome, BaseException)]
        if failures:
            await _stop_all(publishers)
            raise failures[0]
        self._publishers = publishers
        self._next = itertools.cycle(range(len(publishers)))

    async def close(self) -> None:
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()
        publishers, self._publishers = self._publishers, []
        for publisher in publishers:
            await publisher.stop()

    async def publish(self, message: OutgoingMessage) -> None:
        if not self._publishers:
            raise NotConnectedError(f"{self.url.redacted()}: not connected")
        publisher = self._publishers[next(self._next) % len(self._publishers)]
        try:
            await publisher.submit(message)
        except UnimqError:
            raise
        except Exception as exc:
            raise PublishError(
                f"publishing to {message.topic!r} on {self.url.redacted()} failed: "
                f"{self.url.mask(f'{type(exc).__name__}: {exc}')}"
            ) from None

    async def subscribe(self, spec: SubscriptionSpec) -> KombuSubscription:
        if not self._publishers:
            raise NotConnectedError(f"{self.url.redacted()}: not connected")
        subscription = KombuSubscription(self.url, self.profile, self.options, spec)
        try:
            await subscription.start()
        except UnimqError:
            raise
        except Exception as exc:
            raise connect_error(self.url, exc) from None
        self._subscriptions.append(subscription)
        return subscription


async def _stop_all(publishers: list[Publisher]) -> None:
    """Stop every publisher still open (one whose start failed has closed its thread)."""
    for publisher in publishers:
        if publisher.thread.closed:
            continue
        try:
            await publisher.stop()
        except Exception as exc:  # closing after a failed connect: the first error is raised
            logger.debug("closing a kombu publishing connection: %s", exc)
