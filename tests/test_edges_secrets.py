"""Passwords and secret options never show: str, repr, errors, their whole chain, logs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest

from unimq import Broker
from unimq.errors import AuthenticationError, ConfigurationError, UnimqError
from unimq.hookspecs import hookimpl
from unimq.plugins import TransportRegistry, register_plugin
from unimq.transport import Capabilities, OutgoingMessage, SubscriptionSpec, TransportContext
from unimq.url import BrokerURL, redact

AMBIGUOUS = "a:b@c/d?e#f"
NASTY = ["p@ss", "pa/ss", "pa#ss", "pa?ss", "pa ss", "p\uff20ss", "p\uff1ass", AMBIGUOUS, "p%ss"]


def chain_text(error: BaseException) -> str:
    """Everything a traceback (or a curious caller) can reach from ``error``."""
    texts: list[str] = []
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        texts += [str(item), repr(item), *(repr(a) for a in item.args)]
        texts += [repr(getattr(item, "object", ""))]  # UnicodeError.object
        stack += [item.__cause__, item.__context__]
    return "\n".join(texts)


@pytest.mark.parametrize("password", NASTY)
@pytest.mark.parametrize("scheme", ["amqp", "kafka", "rocketmq", "memory"])
def test_raw_special_characters_in_the_password_are_masked(scheme: str, password: str) -> None:
    secret = f"Zq{password}Xw"
    raw = f"{scheme}://user:{secret}@127.0.0.1:5672/vh"
    try:
        url = BrokerURL.parse(raw)
    except UnimqError as error:
        text = chain_text(error)
    else:
        if password != AMBIGUOUS:  # an '@' then '/': could be user@host/path; only masked
            assert url.password is not None and url.password.get_secret_value() == secret
            assert url.host == "127.0.0.1" and url.port == 5672
        parsed = url.password.get_secret_value() if url.password else ""
        text = f"{url} {url!r} {url.redacted()} {url.mask('client said: ' + parsed)}"
    assert "Zq" not in text and "Xw" not in text


@pytest.mark.parametrize(
    "query",
    [
        ("sasl_password=Zq-secret-Xw", "Zq-secret-Xw"),
        ("ssl_key_password=Zq-secret-Xw", "Zq-secret-Xw"),
        ("secret_key=Zq%20s%26Xw", "Zq s&Xw"),
    ],
)
def test_secret_query_options_are_masked(query: tuple[str, str]) -> None:
    url = BrokerURL.parse(f"kafka://127.0.0.1:9092?client_id=me&{query[0]}")
    for text in (str(url), repr(url), url.redacted(), url.mask(f"client said: {query[1]}")):
        assert "Zq" not in text and "Xw" not in text
    assert "client_id=me" in str(url)


def test_kafka_settings_errors_mask_the_sasl_password() -> None:
    pytest.importorskip("unimq_kafka")
    with pytest.raises(ConfigurationError) as info:
        Broker("kafka://?sasl_password=Zq-secret-Xw")  # "names no broker", with the URL
    assert "Zq" not in chain_text(info.value)


def test_redact_masks_secret_pairs_in_any_text() -> None:
    assert redact("sasl.password=hunter2 other=1") == "sasl.password=*** other=1"
    assert redact("x://u:a@b@c/d") == "x://u:***@c/d"


# -- errors from an adapter ------------------------------------------------------------------


class _Leaky:
    capabilities = Capabilities(ordering=False, broadcast=False, max_delay=0)

    def __init__(self, url: BrokerURL, options: Mapping[str, Any], ctx: TransportContext) -> None:
        self.url = url
        self.options = options

    def _secret(self) -> str:
        return self.url.password.get_secret_value() if self.url.password else ""

    async def close(self) -> None:
        return None

    async def publish(self, message: OutgoingMessage) -> None:
        return None

    async def subscribe(self, spec: SubscriptionSpec) -> Any:
        raise NotImplementedError


class OwnErrorOnConnect(_Leaky):
    """An adapter whose own UnimqError quotes the password (and chains the raw error)."""

    async def connect(self) -> None:
        try:
            raise OSError(f"auth failed for {self._secret()} / {self.options.get('token')}")
        except OSError as exc:
            raise AuthenticationError(f"refused: {self._secret()}") from exc


class RawErrorOnConnect(_Leaky):
    async def connect(self) -> None:
        raise OSError(f"auth failed for {self._secret()} / {self.options.get('token')}")


def own_error_factory(url: BrokerURL, options: Mapping[str, Any], ctx: TransportContext) -> Any:
    raise ConfigurationError(f"bad option for {url.password.get_secret_value()}")  # type: ignore[union-attr]


def raw_error_factory(url: BrokerURL, options: Mapping[str, Any], ctx: TransportContext) -> Any:
    raise ValueError(f"cannot use {url.password.get_secret_value()}")  # type: ignore[union-attr]


class _Plugin:
    @hookimpl
    def unimq_register_transports(self, registry: TransportRegistry) -> None:
        registry.add("edges-own", OwnErrorOnConnect, "adapter error quoting the password")
        registry.add("edges-raw", RawErrorOnConnect, "library error quoting the password")
        registry.add("edges-ownfactory", own_error_factory, "factory UnimqError")
        registry.add("edges-rawfactory", raw_error_factory, "factory ValueError")


_installed: list[bool] = []


@pytest.fixture(autouse=True)
def _plugin() -> None:
    if not _installed:
        register_plugin(_Plugin(), name="unimq-edges-secrets")
        _installed.append(True)


SECRET = "Zq-hunter2-Xw"


@pytest.mark.parametrize("scheme", ["edges-ownfactory", "edges-rawfactory"])
def test_factory_errors_are_masked_in_the_whole_chain(scheme: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Broker(f"{scheme}://u:{SECRET}@127.0.0.1")
    assert SECRET not in chain_text(info.value)
    assert info.value.__context__ is None


@pytest.mark.parametrize("scheme", ["edges-own", "edges-raw"])
async def test_connect_errors_are_masked_in_the_whole_chain(
    scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = Broker(f"{scheme}://u:{SECRET}@127.0.0.1", token="Zq-token-Xw")
    with pytest.raises(UnimqError) as info:
        await broker.connect()
    text = chain_text(info.value)
    assert SECRET not in text and "Zq-token-Xw" not in text
    assert info.value.__context__ is None or SECRET not in chain_text(info.value.__context__)
    assert SECRET not in caplog.text


async def test_secret_transport_options_are_masked_in_connect_errors() -> None:
    broker = Broker("edges-raw://127.0.0.1", token="Zq-token-Xw")
    with pytest.raises(UnimqError) as info:
        await broker.connect()
    assert "Zq-token-Xw" not in chain_text(info.value)


@pytest.mark.parametrize(
    "url", ["amqp://h:\u00b2", "amqp://h:\u0663", "kafka://[::1", "amqp://h\ud800", "amqp://a b"]
)
def test_malformed_urls_are_typed_errors(url: str) -> None:
    from unimq.errors import InvalidURLError

    with pytest.raises(InvalidURLError):
        Broker(url)
