"""Scraping a ``/metrics`` endpoint from async tests: a free port, the HTTP GET off the event
loop (the endpoint is served by a thread of the same process), the samples parsed."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


async def scrape(port: int) -> Samples:
    """Every sample on ``/metrics``, keyed by (name, labels)."""
    text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))
