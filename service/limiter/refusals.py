"""The limiter's refusals: a verdict that does not let a request on."""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.core.refusals import Refusal
from service.limiter.ratelimit import Limiter, Outcome, Verdict


@dataclass(eq=False)
class RateLimited(Refusal):
    """Over a limit (``verdict.violated`` names which); ``verdict.cached``: said from memory."""

    verdict: Verdict


@dataclass(eq=False)
class LimiterUnavailable(Refusal):
    """The limiter's Redis cannot decide and the route fails closed: nothing was admitted."""

    retry_after_seconds: int
    verdict: Verdict


def refuse_unless_admitted(verdict: Verdict, limiter: Limiter) -> None:
    """Raise the refusal of a verdict that does not let the request on."""
    if verdict.outcome is Outcome.LIMITED:
        raise RateLimited(verdict)
    if verdict.outcome is Outcome.FAILED_CLOSED:
        raise LimiterUnavailable(math.ceil(limiter.breaker.cooldown_seconds), verdict)
