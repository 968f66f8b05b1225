"""Bodies on the wire: how published objects become bytes and bytes become handler arguments.

``BaseModel``/dict/list and other JSON-able values are sent as JSON, ``str`` as UTF-8 text,
``bytes`` as they are. NaN and infinity are refused (:class:`~unimq.errors.EncodeError`): they
are not JSON, so a consumer in another language could not parse the message.
On the way in, the handler's annotation decides: ``bytes`` gets the raw
body, ``str`` the UTF-8 text, anything else is validated from JSON by pydantic (a
``TypeAdapter``, built once per handler). A body that does not decode is a poison message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, TypeAdapter

from . import headers as h
from .errors import EncodeError


def encode(body: Any) -> tuple[bytes, str]:
    """Return ``(payload, content_type)`` for a publishable object."""
    if isinstance(body, bytes):
        return body, h.BINARY
    if isinstance(body, str):
        try:
            return body.encode("utf-8"), h.TEXT
        except UnicodeEncodeError:
            raise EncodeError(
                "cannot encode a str body as UTF-8: it contains a lone surrogate"
            ) from None
    if isinstance(body, BaseModel):
        return body.model_dump_json().encode("utf-8"), h.JSON
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body), h.BINARY
    try:
        if isinstance(body, (dict, list, tuple, int, float, bool)) or body is None:
            # allow_nan=False: NaN/Infinity are not JSON, and other languages' parsers refuse them.
            text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            return text.encode(), h.JSON
        return _ANY.dump_json(body), h.JSON
    except Exception as exc:
        raise EncodeError(
            f"cannot encode a {type(body).__name__} body: publish bytes, str, a pydantic model "
            f"or a JSON-serialisable value ({exc})"
        ) from None


_ANY: TypeAdapter[Any] = TypeAdapter(Any)

Decoder = Callable[[bytes], Any]


class DecodeError(ValueError):
    """The body does not match the handler's annotation (a poison message)."""


def decoder_for(annotation: Any) -> Decoder:
    """Build the decoder for one handler parameter once, at subscribe time."""
    if annotation is bytes:
        return _identity
    if annotation is str:
        return _utf8
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        model = annotation

        def decode_model(body: bytes) -> Any:
            try:
                return model.model_validate_json(body)
            except Exception as exc:
                raise DecodeError(str(exc)) from exc

        return decode_model
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)

    def decode_any(body: bytes) -> Any:
        try:
            return adapter.validate_json(body)
        except Exception as exc:
            raise DecodeError(str(exc)) from exc

    return decode_any


def _identity(body: bytes) -> bytes:
    return body


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"body is not valid UTF-8: {exc}") from exc
