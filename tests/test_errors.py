"""Bad input gets clear, typed errors, raised early, and passwords never leak."""

from __future__ import annotations

import logging
import time

import pytest

import unimq
from unimq import (
    AuthenticationError,
    Broker,
    BrokerUnreachableError,
    ConfigurationError,
    HandlerSignatureError,
    InvalidURLError,
    Message,
    NotConnectedError,
    UnimqError,
    UnknownSchemeError,
    UnsupportedFeatureError,
)

from . import fakes

SECRET = "s3cr3t-p4ss"


@pytest.fixture(autouse=True)
def _fakes() -> None:
    fakes.install()


def test_every_error_derives_from_unimq_error() -> None:
    for name in unimq.__all__:
        obj = getattr(unimq, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and name.endswith("Error"):
            assert issubclass(obj, UnimqError), name


def test_unknown_scheme_names_the_installed_schemes() -> None:
    with pytest.raises(UnknownSchemeError) as info:
        Broker(f"nats://user:{SECRET}@localhost:4222")
    message = str(info.value)
    assert "nats://" in message and "memory://" in message and "installed" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    "url",
    ["", "localhost:5672", "://host", "amqp://host:notaport", "amqp://host:99999", "1amqp://host"],
)
def test_malformed_urls(url: str) -> None:
    with pytest.raises(InvalidURLError):
        Broker(url)


def test_malformed_url_error_masks_the_password() -> None:
    with pytest.raises(InvalidURLError) as info:
        Broker(f"amqp://guest:{SECRET}@host:bad/")
    assert SECRET not in str(info.value) and "***" in str(info.value)


async def test_unreachable_broker_times_out_with_a_clear_error() -> None:
    broker = Broker(f"hang://user:{SECRET}@127.0.0.1:1", connect_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(BrokerUnreachableError) as info:
        async with broker:
            pass
    assert time.monotonic() - started < 3
    assert "0.3s" in str(info.value) and SECRET not in str(info.value)


def test_connect_timeout_defaults_to_ten_seconds() -> None:
    assert Broker("memory://").connect_timeout == 10.0


async def test_bad_credentials_raise_authentication_error() -> None:
    with pytest.raises(AuthenticationError) as info:
        await Broker(f"refuse://bob:{SECRET}@127.0.0.1/").connect()
    assert SECRET not in str(info.value)


async def test_library_errors_are_wrapped_and_masked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BrokerUnreachableError) as info:
        await Broker(f"explode://bob:{SECRET}@127.0.0.1/").connect()
    assert "OSError" in str(info.value)
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert SECRET not in caplog.text


async def test_password_never_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    broker = Broker(f"memory://user:{SECRET}@vault")
    assert (
        SECRET not in repr(broker)
        and SECRET not in repr(broker.url)
        and SECRET not in str(broker.url)
    )
    async with broker:
        await broker.publish("t", b"x")
    assert SECRET not in caplog.text
    assert broker.url.password is not None and broker.url.password.get_secret_value() == SECRET


def test_two_body_parameters_are_refused() -> None:
    broker = Broker("memory://")
    with pytest.raises(HandlerSignatureError, match="2 body parameters"):

        @broker.subscriber("t")
        async def handler(a: dict[str, int], b: str) -> None: ...


def test_unannotated_body_is_refused() -> None:
    broker = Broker("memory://")
    with pytest.raises(HandlerSignatureError, match="no annotation"):

        @broker.subscriber("t")
        async def handler(order) -> None:  # type: ignore[no-untyped-def]
            ...


def test_varargs_are_refused() -> None:
    broker = Broker("memory://")
    with pytest.raises(HandlerSignatureError):

        @broker.subscriber("t")
        async def handler(*args: bytes) -> None: ...


def test_handler_taking_only_message_is_fine() -> None:
    broker = Broker("memory://")

    @broker.subscriber("t", group="g")
    async def handler(message: Message) -> None: ...

    assert broker.subscribers[0].group == "g"


def test_group_defaults_to_module_and_qualname() -> None:
    broker = Broker("memory://")

    @broker.subscriber("t")
    async def reserve_stock(message: Message) -> None: ...

    assert (
        broker.subscribers[0].group
        == f"{__name__}.test_group_defaults_to_module_and_qualname.<locals>.reserve_stock"
    )


def test_ordered_on_a_backend_that_cannot_order_is_refused() -> None:
    broker = Broker("hang://127.0.0.1")
    with pytest.raises(UnsupportedFeatureError, match="ordered=True"):

        @broker.subscriber("t", ordered=True)
        async def handler(message: Message) -> None: ...


def test_router_with_ordered_subscriber_is_refused_at_include() -> None:
    router = unimq.Router()

    @router.subscriber("t", ordered=True)
    async def handler(message: Message) -> None: ...

    with pytest.raises(UnsupportedFeatureError):
        Broker("hang://127.0.0.1").include_router(router)


def test_delay_on_a_backend_without_delay_is_refused() -> None:
    broker = Broker("hang://127.0.0.1")
    assert broker.capabilities.max_delay == 0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"ack": "sometimes"}, "ack"),
        ({"dead_letter": ""}, "dead_letter"),
        ({"retry": 3}, "RetryPolicy"),
        ({"group": ""}, "group"),
    ],
)
def test_bad_subscriber_options(options: dict[str, object], match: str) -> None:
    broker = Broker("memory://")
    with pytest.raises(ConfigurationError, match=match):
        broker.subscriber("t", **options)(_noop)  # type: ignore[arg-type]


async def _noop(message: Message) -> None: ...


def test_bad_retry_policies() -> None:
    with pytest.raises(ConfigurationError):
        unimq.RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigurationError):
        unimq.exponential(factor=0.5)
    with pytest.raises(ConfigurationError):
        unimq.fixed(-1)


async def test_publish_outside_the_context_is_a_clear_error() -> None:
    with pytest.raises(NotConnectedError, match="async with broker"):
        await Broker("memory://").publish("t", b"x")


async def test_unencodable_body_and_bad_headers() -> None:
    async with Broker("memory://") as broker:
        with pytest.raises(unimq.EncodeError):
            await broker.publish("t", object())
        with pytest.raises(ConfigurationError):
            await broker.publish("t", b"x", headers={"h": object()})  # type: ignore[dict-item]
        with pytest.raises(ConfigurationError):
            await broker.publish("", b"x")


def test_duplicate_subscriber_in_one_group_is_refused() -> None:
    broker = Broker("memory://")
    broker.subscriber("t", group="g")(_noop)
    with pytest.raises(ConfigurationError, match="two subscribers"):
        broker.subscriber("t", group="g")(_noop)


def test_unknown_transport_option_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="takes no transport options"):
        Broker("memory://", prefetch_everything=True)
