"""RocketMQ security pieces that need no broker: how a proxy refusal is classified, and how
``tls_ca_file`` reaches gRPC (one bundle per process, frozen once a TLS channel exists)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rocketmq")

from unimq_rocketmq import access
from unimq_rocketmq import tls as tls_setup
from unimq_rocketmq.options import RocketMQOptions

from unimq.errors import AuthenticationError, AuthorizationError, ConfigurationError
from unimq.url import BrokerURL


def test_wrong_secret_is_authentication() -> None:
    error = access.refusal(40100, "check signature failed.", access_key="app", action="x")
    assert isinstance(error, AuthenticationError)
    assert "'app'" in str(error)


def test_no_permission_is_authorization_naming_the_action() -> None:
    text = "User:app has no permission to access Topic:t from 1.2.3.4, no matched policies."
    error = access.refusal(40100, text, access_key="app", action="publish to topic 't'")
    assert isinstance(error, AuthorizationError)
    assert "may not publish to topic 't'" in str(error)
    assert isinstance(access.refusal(40300, "", access_key="", action="a"), AuthorizationError)


def test_other_codes_are_not_refusals() -> None:
    assert access.refusal(20000, "OK", access_key="app", action="x") is None
    assert access.refusal(40402, "topic not found", access_key="app", action="x") is None


def test_tls_ca_file_option() -> None:
    url = BrokerURL.parse("rocketmq://ak:sk@h:8081?tls=true&tls_ca_file=/etc/ca.pem")
    options = RocketMQOptions.parse(url, {})
    assert options.tls and options.tls_ca_file == "/etc/ca.pem"
    assert "sk" not in repr(options)


@pytest.fixture
def roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setattr(tls_setup, "_trusted", [])
    monkeypatch.setattr(tls_setup, "_frozen", False)
    system = tmp_path / "system.pem"
    system.write_text("SYSTEM\n")
    monkeypatch.setenv(tls_setup.ROOTS_ENV, str(system))
    return tmp_path


def test_ca_files_are_bundled_with_the_roots_named_before(roots: Path) -> None:
    first, second = roots / "a.pem", roots / "b.pem"
    first.write_text("A\n")
    second.write_text("B\n")
    tls_setup.use_ca_file(str(first))
    tls_setup.use_ca_file(str(second))
    tls_setup.use_ca_file(str(first))  # already trusted: nothing changes
    bundle = Path(tls_setup.os.environ[tls_setup.ROOTS_ENV]).read_text()
    assert bundle == "SYSTEM\nA\nB\n"


def test_a_new_ca_after_the_first_tls_channel_is_refused(roots: Path) -> None:
    first, second = roots / "a.pem", roots / "b.pem"
    first.write_text("A\n")
    second.write_text("B\n")
    tls_setup.use_ca_file(str(first))
    tls_setup.freeze()
    tls_setup.use_ca_file(str(first))
    with pytest.raises(ConfigurationError, match="one PEM file"):
        tls_setup.use_ca_file(str(second))


def test_missing_ca_file(roots: Path) -> None:
    with pytest.raises(ConfigurationError, match="not a readable file"):
        tls_setup.use_ca_file(str(roots / "missing.pem"))
