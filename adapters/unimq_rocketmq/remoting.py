"""A minimal client for RocketMQ's remoting (admin) protocol, in asyncio.

The gRPC proxy that applications talk to cannot create topics or consumer groups; only the
broker's remoting port can (that is what ``mqadmin`` uses, one JVM start per call). Speaking
the protocol directly takes milliseconds and needs no Java, which makes ``auto_provision``
practical in development and tests.

Frame (``org.apache.rocketmq.remoting.protocol.RemotingCommand``, JSON serialisation)::

    int32 total length (everything after this field)
    int32 (serialize type << 24) | header length      -- serialize type 0 = JSON
    header: JSON {"code", "language", "version", "opaque", "flag", "remark", "extFields"}
    body: bytes

``flag`` bit 0 marks a response; responses carry the request's ``opaque``; code 0 is SUCCESS.
Request codes used (``RequestCode.java``): 17 UPDATE_AND_CREATE_TOPIC (broker),
200 UPDATE_AND_CREATE_SUBSCRIPTIONGROUP (broker), 106 GET_BROKER_CLUSTER_INFO (name server),
207 DELETE_SUBSCRIPTIONGROUP (broker); for ``lag`` and dead letters (see ``admin``):
14 QUERY_CONSUMER_OFFSET, 15 UPDATE_CONSUMER_OFFSET, 31 GET_MIN_OFFSET,
201 GET_ALL_SUBSCRIPTIONGROUP_CONFIG, 208 GET_CONSUME_STATS, 300 QUERY_TOPIC_CONSUME_BY_WHO
(all broker); for ``rewind`` and the backlog age (see ``rewind``): 11 PULL_MESSAGE,
29 SEARCH_OFFSET_BY_TIMESTAMP, 222 INVOKE_BROKER_TO_RESET_OFFSET (all broker).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import struct
from dataclasses import dataclass
from typing import Any

PULL_MESSAGE = 11
QUERY_CONSUMER_OFFSET = 14
UPDATE_CONSUMER_OFFSET = 15
UPDATE_AND_CREATE_TOPIC = 17
SEARCH_OFFSET_BY_TIMESTAMP = 29
GET_MIN_OFFSET = 31
GET_BROKER_CLUSTER_INFO = 106
UPDATE_AND_CREATE_SUBSCRIPTIONGROUP = 200
GET_ALL_SUBSCRIPTIONGROUP_CONFIG = 201
DELETE_SUBSCRIPTIONGROUP = 207
GET_CONSUME_STATS = 208
INVOKE_BROKER_TO_RESET_OFFSET = 222
QUERY_TOPIC_CONSUME_BY_WHO = 300
SUCCESS = 0
#: Response codes (``ResponseCode.java``).
TOPIC_NOT_EXIST = 17
QUERY_NOT_FOUND = 22
SUBSCRIPTION_GROUP_NOT_EXIST = 26
_VERSION = 461  # V5_3_3 in MQVersion; brokers accept older and newer clients alike
_opaque = itertools.count(1)


class RemotingError(Exception):
    """The peer answered with an error code, or could not be reached."""


@dataclass
class Response:
    code: int
    remark: str | None
    ext_fields: dict[str, str]
    body: bytes


def encode_request(code: int, ext_fields: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
    opaque = next(_opaque)
    header = json.dumps(
        {
            "code": code,
            "language": "PYTHON",
            "version": _VERSION,
            "opaque": opaque,
            "flag": 0,
            "extFields": ext_fields,
            "serializeTypeCurrentRPC": "JSON",
        },
        separators=(",", ":"),
    ).encode()
    frame = struct.pack(">ii", 4 + len(header) + len(body), len(header)) + header + body
    return opaque, frame


def decode_frame(payload: bytes) -> tuple[dict[str, Any], bytes]:
    """``payload`` is a frame without its leading length field."""
    (mark,) = struct.unpack(">i", payload[:4])
    kind = (mark >> 24) & 0xFF
    header_length = mark & 0xFFFFFF
    if kind != 0:
        raise RemotingError(f"unsupported remoting serialisation type {kind} (expected JSON)")
    header = json.loads(payload[4 : 4 + header_length])
    return header, payload[4 + header_length :]


async def call(
    address: str,
    code: int,
    ext_fields: dict[str, str],
    body: bytes = b"",
    *,
    timeout: float = 5.0,
) -> Response:
    """One request/response on a fresh connection (admin calls are rare: no pooling)."""
    host, _, port = address.rpartition(":")
    opaque, frame = encode_request(code, ext_fields, body)

    async def exchange() -> Response:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(frame)
            await writer.drain()
            while True:
                (length,) = struct.unpack(">i", await reader.readexactly(4))
                header, rest = decode_frame(await reader.readexactly(length))
                if header.get("opaque") == opaque and int(header.get("flag", 0)) & 1:
                    return Response(
                        code=int(header.get("code", -1)),
                        remark=header.get("remark"),
                        ext_fields=dict(header.get("extFields") or {}),
                        body=rest,
                    )
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(exchange(), timeout)
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
        raise RemotingError(f"RocketMQ remoting call to {address} failed: {exc!r}") from exc


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SCALARS = json.JSONDecoder()


def loads_fastjson(body: bytes) -> Any:
    """Parse a RocketMQ JSON body. fastjson writes map keys that are not strings as they are:
    integers unquoted (``{0:"..."}``) and objects as objects (``ConsumeStats.offsetTable`` is
    ``{{"brokerName":"b","queueId":0,"topic":"t"}:{...}}``).

    Number keys come back as strings (``{"0": "..."}``); object keys as hashable tuples of
    their sorted ``(field, value)`` pairs (``dict(key)`` gives the fields back)."""
    text = body.decode("utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    parser = _Lenient(text)
    value = parser.value()
    parser.skip()
    if parser.position != len(text):
        raise ValueError(f"trailing data at {parser.position} in a RocketMQ JSON body")
    return value


class _Lenient:
    """JSON with any value as an object key; scalars are left to the standard decoder."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def skip(self) -> None:
        match = _WHITESPACE.match(self.text, self.position)
        assert match is not None  # the pattern matches the empty string
        self.position = match.end()

    def expect(self, char: str) -> None:
        self.skip()
        if not self.text.startswith(char, self.position):
            raise ValueError(f"expected {char!r} at {self.position} in a RocketMQ JSON body")
        self.position += 1

    def next_is(self, char: str) -> bool:
        self.skip()
        if self.text.startswith(char, self.position):
            self.position += 1
            return True
        return False

    def value(self) -> Any:
        if self.next_is("{"):
            found: dict[Any, Any] = {}
            if self.next_is("}"):
                return found
            while True:
                key = _key(self.value())
                self.expect(":")
                found[key] = self.value()
                if not self.next_is(","):
                    self.expect("}")
                    return found
        if self.next_is("["):
            items: list[Any] = []
            if self.next_is("]"):
                return items
            while True:
                items.append(self.value())
                if not self.next_is(","):
                    self.expect("]")
                    return items
        value, self.position = _SCALARS.raw_decode(self.text, self.position)
        return value


def _key(key: Any) -> Any:
    if isinstance(key, str):
        return key
    if isinstance(key, (dict, list)):
        return _frozen(key)
    return json.dumps(key)  # numbers, true/false/null: as if fastjson had quoted them


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((str(name), _frozen(item)) for name, item in value.items()))
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    return value


def checked(response: Response, what: str) -> Response:
    if response.code != SUCCESS:
        raise RemotingError(f"{what} failed (code {response.code}): {response.remark or ''}")
    return response
