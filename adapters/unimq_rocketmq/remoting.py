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
207 DELETE_SUBSCRIPTIONGROUP (broker).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import struct
from dataclasses import dataclass
from typing import Any

UPDATE_AND_CREATE_TOPIC = 17
GET_BROKER_CLUSTER_INFO = 106
UPDATE_AND_CREATE_SUBSCRIPTIONGROUP = 200
DELETE_SUBSCRIPTIONGROUP = 207
SUCCESS = 0
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


_BARE_KEY = re.compile(r"([{,])\s*(-?\d+)\s*:")


def loads_fastjson(body: bytes) -> Any:
    """Parse a RocketMQ JSON body: fastjson writes integer map keys unquoted (``{0:"..."}``)."""
    text = body.decode("utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json.loads(_BARE_KEY.sub(r'\1"\2":', text))


def checked(response: Response, what: str) -> Response:
    if response.code != SUCCESS:
        raise RemotingError(f"{what} failed (code {response.code}): {response.remark or ''}")
    return response
