"""One source of feature flags for the suite: ``@requires(...)`` (the way Watermill reads
``Features``).

A backend states what it can do in exactly two places, both owned by its adapter: the
:class:`~unimq.transport.Capabilities` of its transport (``ordering``, ``broadcast``,
``durable``, ``max_delay``...) and the optional SPI protocols its transport implements
(:class:`~unimq.transport.SupportsDeadLetters`, :class:`~unimq.transport.SupportsLag`...). The
suite never keeps a second copy of them: a case names what it needs with ``@requires``, and
the ``requirements`` fixture of both suites reads the transport itself and skips the case, with
the reason, when the backend lacks it. A broker restart is the only feature that is not the
adapter's to declare (the test environment provides it: ``Backend.restart``).
"""

from __future__ import annotations

from typing import Any

import pytest

from ...transport import Capabilities, Transport

#: Feature names a case may require: ``Capabilities`` flags, ``native_delay``, ``restart``.
FLAGS = (
    "ordering",
    "broadcast",
    "durable",
    "native_delay",
    "restart",
    "keeps_unread",
    "transactions",
    "rewind",
)

Feature = Any  # a name of FLAGS, or an optional SPI protocol class (``SupportsLag``...)


def requires(*features: Feature) -> pytest.MarkDecorator:
    """Mark a case as needing ``features``; it is skipped, with the reason, without them.

    ``features`` are names of :data:`FLAGS` or optional SPI protocols (runtime-checkable
    ``Supports*`` classes of :mod:`unimq.transport`). A misspelt name fails at import time,
    not silently at run time.
    """
    for feature in features:
        if isinstance(feature, str):
            if feature not in FLAGS:
                raise ValueError(f"unknown feature {feature!r}; known: {', '.join(FLAGS)}")
        elif not (isinstance(feature, type) and getattr(feature, "_is_runtime_protocol", False)):
            raise TypeError(f"requires() takes flag names or Supports* protocols, not {feature!r}")
    return pytest.mark.requires.with_args(*features)  # a lone class arg is not a target


def supports(feature: Feature, transport: Transport, *, restart: object | None = None) -> bool:
    """Whether ``transport`` (and the test environment, for ``restart``) offers ``feature``."""
    if isinstance(feature, str):
        capabilities: Capabilities = transport.capabilities
        if feature == "restart":
            return restart is not None
        if feature == "native_delay":
            return capabilities.max_delay is None or capabilities.max_delay > 0
        return bool(getattr(capabilities, feature))
    return isinstance(transport, feature)


def feature_name(feature: Feature) -> str:
    return feature if isinstance(feature, str) else str(feature.__name__)


#: How a ``requires(...)`` skip reason ends: the test summary plugin allows these skips under
#: CI=true (a declared capability, not a missing broker), recognising them by this suffix.
REQUIRES_SUFFIX = "(requires(...))"


def missing(
    node: pytest.Item, transport: Transport, *, restart: object | None, scheme: str
) -> str | None:
    """The skip reason for ``node`` on ``transport``, or ``None`` when nothing is missing."""
    lacking = [
        feature_name(feature)
        for marker in node.iter_markers("requires")
        for feature in marker.args
        if not supports(feature, transport, restart=restart)
    ]
    if not lacking:
        return None
    return f"the {scheme}:// backend does not offer {', '.join(lacking)} {REQUIRES_SUFFIX}"
