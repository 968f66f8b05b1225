"""Testing helpers: the virtual clock and the conformance suite (``unimq.testing.conformance``)."""

from .clock import VirtualClock

__all__ = ["VirtualClock"]
