"""The plugin manager and the registries that plugins fill in."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigurationError, MissingDependencyError, UnknownSchemeError
from .idempotency import IdempotencyStore
from .ratelimit import RateLimit, RateLimiter
from .transport import Transport, TransportContext, TransportFactory
from .url import BrokerURL

logger = logging.getLogger("unimq.plugins")


@dataclass(frozen=True)
class TransportEntry:
    scheme: str
    factory: TransportFactory
    description: str
    #: Adapter name: ``UNIMQ_<NAME>_<OPTION>`` environment variables become its options.
    name: str


class TransportRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, TransportEntry] = {}

    def add(
        self, scheme: str, factory: TransportFactory, description: str = "", name: str = ""
    ) -> None:
        """Register ``factory`` for ``scheme://`` URLs.

        ``name`` (default: the scheme) names the adapter; ``Broker.from_env()`` passes
        ``UNIMQ_<NAME>_<OPTION>`` variables to it as option ``<option>``. Schemes of one
        adapter (``amqp``/``amqps``) share a name.
        """
        scheme = scheme.lower()
        if scheme in self._entries and self._entries[scheme].factory is not factory:
            logger.warning("transport scheme %r registered twice; the later one wins", scheme)
        self._entries[scheme] = TransportEntry(
            scheme, factory, description, (name or scheme).lower()
        )

    def get(self, scheme: str) -> TransportEntry:
        entry = self._entries.get(scheme.lower())
        if entry is None:
            installed = ", ".join(f"{s}://" for s in sorted(self._entries)) or "none"
            raise UnknownSchemeError(
                f"no transport is installed for {scheme}:// (installed: {installed}); "
                "install the adapter, e.g. pip install 'unimq[rabbitmq]' for amqp://, "
                "'unimq[kafka]' for kafka://, 'unimq[rocketmq]' for rocketmq://"
            )
        return entry

    def schemes(self) -> list[str]:
        return sorted(self._entries)


StoreFactory = Callable[[str], IdempotencyStore]


class IdempotencyStoreRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, StoreFactory] = {}

    def add(self, scheme: str, factory: StoreFactory) -> None:
        self._factories[scheme.lower()] = factory

    def create(self, url: str) -> IdempotencyStore:
        scheme = url.split("://", 1)[0].lower() if "://" in url else url.lower()
        factory = self._factories.get(scheme)
        if factory is None:
            known = ", ".join(sorted(self._factories)) or "none"
            raise ConfigurationError(
                f"no idempotency store is installed for {scheme!r} (installed: {known})"
            )
        return factory(url)


RateLimiterFactory = Callable[[RateLimit, str, str], RateLimiter]


class RateLimiterRegistry:
    """Shared rate-limit stores by URL scheme (``RateLimit(..., shared="redis://...")``)."""

    def __init__(self) -> None:
        self._factories: dict[str, RateLimiterFactory] = {}

    def add(self, scheme: str, factory: RateLimiterFactory) -> None:
        self._factories[scheme.lower()] = factory

    def get(self, limit: RateLimit) -> RateLimiterFactory:
        scheme = limit.scheme or ""
        factory = self._factories.get(scheme)
        if factory is None:
            known = ", ".join(f"{s}://" for s in sorted(self._factories)) or "none"
            raise ConfigurationError(
                f"no shared rate limiter is installed for {scheme}:// (installed: {known}); "
                "for redis:// install 'unimq[redis]'"
            )
        return factory


class _Plugins:
    """Loaded once per process, on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._manager: pluggy.PluginManager | None = None
        self.transports = TransportRegistry()
        self.stores = IdempotencyStoreRegistry()
        self.rate_limiters = RateLimiterRegistry()
        self.broken: dict[str, str] = {}  # plugin name -> why it failed to load

    @property
    def manager(self) -> pluggy.PluginManager:
        if self._manager is None:
            with self._lock:
                if self._manager is None:
                    self._manager = self._load()
        return self._manager

    def _load(self) -> pluggy.PluginManager:
        manager = pluggy.PluginManager(hookspecs.PROJECT)
        manager.add_hookspecs(hookspecs)
        self._load_entry_points(manager)
        if not any(name == "memory" for name, _ in manager.list_name_plugin()):
            # Running from a source tree that was never installed: the entry point is missing,
            # but the core's own backend must always be there.
            from .memory import plugin as memory_plugin

            if not manager.is_registered(memory_plugin):
                manager.register(memory_plugin, name="memory")
        manager.hook.unimq_register_transports(registry=self.transports)
        manager.hook.unimq_register_idempotency_stores(registry=self.stores)
        manager.hook.unimq_register_rate_limiters(registry=self.rate_limiters)
        return manager

    def _load_entry_points(self, manager: pluggy.PluginManager) -> None:
        """Load each plugin on its own: one broken plugin must not take the others down."""
        for entry in entry_points(group=hookspecs.PROJECT):
            if manager.get_plugin(entry.name) is not None:
                continue
            try:
                plugin = entry.load()
            except Exception as exc:
                self.broken[entry.name] = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "unimq plugin %r (%s) failed to load: %s", entry.name, entry.value, exc
                )
                continue
            manager.register(plugin, name=entry.name)

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin object by hand (tests, applications that embed an adapter)."""
        manager = self.manager
        manager.register(plugin, name=name)
        hooks = manager.hook
        for impl in hooks.unimq_register_transports.get_hookimpls():
            if impl.plugin is plugin:
                impl.function(registry=self.transports)
        for impl in hooks.unimq_register_idempotency_stores.get_hookimpls():
            if impl.plugin is plugin:
                impl.function(registry=self.stores)
        for impl in hooks.unimq_register_rate_limiters.get_hookimpls():
            if impl.plugin is plugin:
                impl.function(registry=self.rate_limiters)


plugins = _Plugins()


def lazy_transport(client_module: str, client: str, extra: str, transport: str) -> TransportFactory:
    """A transport factory that imports its broker client only when a transport is created.

    An application that never uses the scheme does not need the client installed; one that
    does gets a :class:`MissingDependencyError` naming the pip extra. ``transport`` is
    ``"package.module:ClassName"``.
    """
    module_name, _, class_name = transport.partition(":")

    def create(url: BrokerURL, options: Mapping[str, Any], context: TransportContext) -> Transport:
        try:
            importlib.import_module(client_module)
        except ImportError:
            raise MissingDependencyError(
                f"{url.scheme}:// needs {client}: pip install 'unimq[{extra}]'"
            ) from None
        factory: TransportFactory = getattr(importlib.import_module(module_name), class_name)
        return factory(url, options, context)

    create.requires = (client_module, extra)  # type: ignore[attr-defined]  # for 'unimq schemes'
    return create


def missing_extra(factory: TransportFactory) -> str | None:
    """The pip extra a :func:`lazy_transport` factory still needs, or ``None``."""
    requires = getattr(factory, "requires", None)
    if requires is None:
        return None
    client_module, extra = requires
    try:
        found = importlib.util.find_spec(client_module)
    except (ImportError, ValueError):
        found = None
    return None if found is not None else str(extra)


def transport_registry() -> TransportRegistry:
    _ = plugins.manager
    return plugins.transports


def store_registry() -> IdempotencyStoreRegistry:
    _ = plugins.manager
    return plugins.stores


def rate_limiter_registry() -> RateLimiterRegistry:
    _ = plugins.manager
    return plugins.rate_limiters


def register_plugin(plugin: Any, name: str | None = None) -> None:
    plugins.register(plugin, name)
