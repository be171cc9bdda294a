"""A circuit breaker: after repeated failures, stop calling a dependency for a while."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    """Calls go through."""
    OPEN = "open"
    """Calls fail at once, without touching the dependency."""
    HALF_OPEN = "half_open"
    """The cooldown is over: one call probes the dependency."""


class CircuitBreaker:
    """Single-threaded (one asyncio loop): no locks needed."""

    def __init__(
        self, failure_threshold: int, cooldown_seconds: float, clock: Callable[[], float] = time.monotonic
    ):
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.state = BreakerState.CLOSED

    def allow(self) -> bool:
        """May a call go to the dependency now?"""
        if self.state is BreakerState.OPEN and self._clock() - self._opened_at >= self.cooldown_seconds:
            self.state = BreakerState.HALF_OPEN
            self._probing = False
        if self.state is BreakerState.HALF_OPEN:
            if self._probing:
                return False
            self._probing = True
            return True
        return self.state is BreakerState.CLOSED

    def record_success(self) -> None:
        self._failures = 0
        self._probing = False
        self.state = BreakerState.CLOSED

    def record_failure(self) -> None:
        self._failures += 1
        self._probing = False
        if self.state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self.state = BreakerState.OPEN
            self._opened_at = self._clock()
