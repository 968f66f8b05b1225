"""Testing helpers: the virtual clock and the conformance suite (``unimq.testing.conformance``)."""

from .clock import VirtualClock
from .failfast import FailFast, fail_fast
from .memory import reset_memory
from .recorder import Call, Recorder, record

__all__ = [
    "Call",
    "FailFast",
    "Recorder",
    "VirtualClock",
    "fail_fast",
    "record",
    "reset_memory",
]
