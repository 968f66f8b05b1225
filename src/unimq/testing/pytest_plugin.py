"""Loaded by pytest wherever unimq is installed (``pytest11`` entry point): registers the
conformance suite's markers so that third-party adapter suites run cleanly under
``--strict-markers``."""

from __future__ import annotations

from typing import Any


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "requires_restart: needs a broker restart (skipped when the backend has none)"
    )
    config.addinivalue_line("markers", "realbroker: runs against a real broker")
    config.addinivalue_line(
        "markers",
        "requires(*features): needs Capabilities flags / Supports* SPI protocols "
        "(unimq.testing.conformance.requires; skipped, with the reason, without them)",
    )
