"""Plugin hooks: the complete list of what a unimq plugin can provide.

A plugin is a module (or object) with functions named like these hooks and decorated with
:data:`hookimpl`, published in the ``unimq`` entry-point group of its distribution::

    [project.entry-points.unimq]
    mybroker = "mybroker_unimq.plugin"

unimq loads every plugin in that group the first time a :class:`~unimq.Broker` is created.
The built-in memory backend registers through the same group, the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .broker import Broker
    from .plugins import IdempotencyStoreRegistry, RateLimiterRegistry, TransportRegistry

PROJECT = "unimq"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def unimq_register_transports(registry: TransportRegistry) -> None:
    """Register transports by URL scheme: ``registry.add("amqp", factory, "RabbitMQ")``.

    ``factory(url, options, context)`` builds a :class:`~unimq.transport.Transport` for one
    broker: ``url`` is the parsed :class:`~unimq.url.BrokerURL`, ``options`` the ``Broker``
    keyword options (and ``UNIMQ_*`` settings) unimq does not consume itself, ``context`` the
    clock and instance id. Validate options there and raise
    :class:`~unimq.errors.ConfigurationError` for unknown or bad ones. Import the broker's
    client library inside the factory, not at module level, so that an uninstalled extra
    only matters to the users of that scheme (raise
    :class:`~unimq.errors.MissingDependencyError` naming the extra).
    """


@hookspec
def unimq_register_idempotency_stores(registry: IdempotencyStoreRegistry) -> None:
    """Register idempotency stores by URL scheme: ``registry.add("redis", factory)``.

    ``Broker(..., idempotency_store="redis://...")`` then builds the store with
    ``factory(url_string)``. The store implements :class:`~unimq.idempotency.IdempotencyStore`.
    """


@hookspec
def unimq_register_rate_limiters(registry: RateLimiterRegistry) -> None:
    """Register shared rate-limit stores by URL scheme: ``registry.add("redis", factory)``.

    A subscriber with ``rate_limit=RateLimit(200, shared="redis://...")`` gets its limiter from
    ``factory(limit, topic, group)`` when the broker starts: a
    :class:`~unimq.ratelimit.RateLimiter` whose bucket every instance of that subscriber
    (same topic and group) shares. An unreachable store raises
    :class:`~unimq.errors.RateLimiterUnavailableError`.
    """


@hookspec
def unimq_broker_created(broker: Broker) -> None:
    """Called for every new :class:`~unimq.Broker`, before it connects.

    Instrumentation plugins (metrics, tracing) add middleware here with
    ``broker.add_middleware(...)``.
    """
