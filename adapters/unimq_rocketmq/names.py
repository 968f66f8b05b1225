"""unimq names ⇄ RocketMQ resource names.

RocketMQ accepts only ``[%a-zA-Z0-9_-]`` in topic and group names (topics ≤ 127 characters,
groups ≤ 255), and ``%`` is reserved for its own ``%RETRY%``/``%DLQ%`` prefixes. unimq names
contain dots (``orders.created``, ``orders.created.inventory.retry``) and may contain anything
else a user types, so the adapter maps them with a small escape code over ``_``:

=============  ================
unimq          RocketMQ
=============  ================
``_``          ``__``
``.``          ``_d``
``-``          ``-`` (kept)
``[a-zA-Z0-9]`` kept
any other      ``_x`` + 4-hex (BMP) or ``_X`` + 6-hex code point
=============  ================

Every escape starts with ``_`` and the character after it says how long the escape is, so the
encoding is prefix-free: decoding is unambiguous and ``encode`` is a bijection between all
strings and the strings its image contains (no two unimq names collide). ``orders.created``
becomes ``orders_dcreated``; ``a_b.c`` becomes ``a__b_dc``.
"""

from __future__ import annotations

from unimq.errors import ConfigurationError

MAX_TOPIC = 127
MAX_GROUP = 255

_KEPT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def encode(name: str) -> str:
    """The RocketMQ spelling of a unimq name (a bijection; see the module docstring)."""
    out: list[str] = []
    for char in name:
        if char in _KEPT:
            out.append(char)
        elif char == "_":
            out.append("__")
        elif char == ".":
            out.append("_d")
        elif ord(char) <= 0xFFFF:
            out.append(f"_x{ord(char):04x}")
        else:
            out.append(f"_X{ord(char):06x}")
    return "".join(out)


def decode(physical: str) -> str:
    """The unimq name of a RocketMQ name made by :func:`encode`; other names come back as-is."""
    if "_" not in physical:
        return physical
    out: list[str] = []
    index = 0
    length = len(physical)
    try:
        while index < length:
            char = physical[index]
            if char != "_":
                out.append(char)
                index += 1
                continue
            tag = physical[index + 1]
            if tag == "_":
                out.append("_")
                index += 2
            elif tag == "d":
                out.append(".")
                index += 2
            elif tag == "x":
                out.append(chr(int(physical[index + 2 : index + 6], 16)))
                index += 6
            elif tag == "X":
                out.append(chr(int(physical[index + 2 : index + 8], 16)))
                index += 8
            else:
                return physical  # not ours (a foreign name with a lone "_")
    except (IndexError, ValueError):
        return physical
    return "".join(out)


def topic_name(topic: str, namespace_prefix: str = "") -> str:
    """Physical topic for ``topic``, refusing names RocketMQ cannot hold."""
    physical = namespace_prefix + encode(topic)
    if not topic:
        raise ConfigurationError("a RocketMQ topic name cannot be empty")
    if len(physical) > MAX_TOPIC:
        raise ConfigurationError(
            f"topic {topic!r} maps to the RocketMQ topic {physical!r} of {len(physical)} "
            f"characters; RocketMQ allows at most {MAX_TOPIC}: use a shorter topic or group name"
        )
    return physical


def group_name(group: str) -> str:
    """Physical consumer group for ``group``."""
    physical = encode(group)
    if not group:
        raise ConfigurationError("a RocketMQ consumer group name cannot be empty")
    if len(physical) > MAX_GROUP:
        raise ConfigurationError(
            f"group {group!r} maps to the RocketMQ group {physical!r} of {len(physical)} "
            f"characters; RocketMQ allows at most {MAX_GROUP}"
        )
    return physical
