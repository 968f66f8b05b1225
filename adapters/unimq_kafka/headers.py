"""User headers on Kafka records, without loss.

confluent-kafka hands header names, and text values, to librdkafka as C strings, so a NUL
character ends them: a name ``"a\\x00b"`` arrives as ``"a"``, a value ``"x\\x00y"`` as ``"x"``.
Values are therefore sent as UTF-8 bytes (which keep their length) whenever one contains NUL,
and a header whose name contains NUL travels inside one internal header,
``unimq-kafka-headers`` (a JSON object of such names and their values), which
:func:`from_wire` merges back. Publishers cannot use the ``unimq-`` namespace, so it never
collides with a user header. Headers without NUL, the common case, go out as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

PACKED = "unimq-kafka-headers"

WireHeaders = dict[str, "str | bytes"]  # confluent-kafka takes either per value


def to_wire(headers: Mapping[str, str]) -> Mapping[str, str | bytes]:
    """``headers`` as confluent-kafka can send them intact (the same object when it can)."""
    for name, value in headers.items():  # a plain loop: this runs once per message
        if "\x00" in name or "\x00" in value:
            break
    else:
        return headers
    wire: WireHeaders = {}
    packed: dict[str, str] = {}
    for name, value in headers.items():
        if "\x00" in name:
            packed[name] = value
        else:
            wire[name] = value.encode("utf-8") if "\x00" in value else value
    if packed:
        wire[PACKED] = json.dumps(packed, ensure_ascii=False).encode("utf-8")
    return wire


def to_wire_dict(headers: Mapping[str, str]) -> WireHeaders:
    """:func:`to_wire` as the ``dict`` confluent-kafka's ``produce()`` takes (the same object
    when ``headers`` is a dict that needed no packing: no per-message copy)."""
    wire = to_wire(headers)
    return wire if type(wire) is dict else dict(wire)


def from_wire(headers: dict[str, str]) -> dict[str, str]:
    """Restore what :func:`to_wire` packed (in place; returns ``headers``)."""
    packed = headers.pop(PACKED, None)
    if packed:
        try:
            restored = json.loads(packed)
        except ValueError:
            return headers
        if isinstance(restored, dict):
            headers.update({str(name): str(value) for name, value in restored.items()})
    return headers
