"""The delivery pipeline's public seams, kept at their old address.

The pipeline itself lives in :mod:`unimq.delivery`: the envelope codec (:mod:`unimq.envelope`),
outcomes, the stages composed once per subscriber, the settle step and the runtime. Handler
middleware is typed here as it always was: ``async def mw(message, call_next)``.
"""

from __future__ import annotations

from .delivery.host import Middleware, Next
from .delivery.runtime import PipelineContext, SubscriberRuntime
from .delivery.stages import HOLD_IN_PLACE

__all__ = ["HOLD_IN_PLACE", "Middleware", "Next", "PipelineContext", "SubscriberRuntime"]
