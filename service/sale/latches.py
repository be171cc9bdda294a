"""What each API process remembers about a product so that its "no" needs neither Redis nor
PostgreSQL: that it is sold out, or that its sale has not opened yet. A message on the gate
channel (a restock, returned units, a sale change) clears both on every process at once.

A latch also lapses after ``LATCH_SECONDS``: should a message be missed (a dropped
subscription), the next request asks Redis again and latches anew.

"Not open yet" holds for the time admit.lua said is left before the opening, by the clock
admit.lua decides by (Redis's; with ``FLASHSALE_RATE_CLOCK=app`` the pod's own, sent with the
call), not by this process's wall clock, counted from a moment taken before the call, so that
however late the reply comes the latch lets go ``EARLY_SECONDS`` before the opening at the
latest.

A latch is taken only from an answer no clear overtook: each request takes a ``mark`` before it
asks Redis, and an answer that comes back after a clear (a restock or sale change announced
meanwhile) latches nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge
from redis import asyncio as aioredis

from service.core.channels import follow_channel
from service.core.keys import GATE_CHANNEL
from service.core.metrics import NOT_OPEN_LATCH_ANSWERS, SOLD_OUT_LATCH_ANSWERS, SOLD_OUT_LATCHED

LATCH_SECONDS = 5.0
EARLY_SECONDS = 0.05

Fact = TypeVar("Fact")


@dataclass(frozen=True, slots=True)
class Mark:
    """Taken before a request asks Redis: the clears so far, and the moment (on the latch's clock)."""

    clears: int
    at: float


class ProductLatch(Generic[Fact]):
    """Per product, a fact held until a moment on ``clock``; each answer given from it counted
    in ``answers``, and the products held in ``held`` (when given)."""

    def __init__(self, answers: Counter, held: Gauge | None, clock: Callable[[], float]) -> None:
        self._latched: dict[int, tuple[float, Fact]] = {}
        self._clears = 0
        self._answers, self._held, self._clock = answers, held, clock

    def mark(self) -> Mark:
        return Mark(self._clears, self._clock())

    def hold(self, product_id: int, mark: Mark, seconds: float, fact: Fact) -> None:
        """Hold ``fact`` for ``seconds`` from ``mark``, unless a clear came after the mark."""
        if mark.clears == self._clears:
            self._latched[product_id] = (mark.at + seconds, fact)
            self._count_held()

    def fact(self, product_id: int) -> Fact | None:
        """The fact while it holds (an answer from memory); None once it lapsed or never was."""
        latched = self._latched.get(product_id)
        if latched is None:
            return None
        until, fact = latched
        if until > self._clock():
            self._answers.inc()
            return fact
        self._latched.pop(product_id, None)  # lapsed
        self._count_held()
        return None

    def clear(self, product_id: int | None = None) -> None:
        """Forget one product's latch, or every latch; an answer asked for before this latches
        nothing."""
        self._clears += 1
        if product_id is None:
            self._latched.clear()
        else:
            self._latched.pop(product_id, None)
        self._count_held()

    def _count_held(self) -> None:
        if self._held is not None:
            self._held.set(len(self._latched))


class SoldOutLatch(ProductLatch[bool]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(SOLD_OUT_LATCH_ANSWERS, SOLD_OUT_LATCHED, clock)

    def latch(self, product_id: int, mark: Mark) -> None:
        self.hold(product_id, mark, LATCH_SECONDS, True)

    def is_sold_out(self, product_id: int) -> bool:
        return self.fact(product_id) is not None


class NotOpenLatch(ProductLatch[int]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(NOT_OPEN_LATCH_ANSWERS, None, clock)

    def latch(self, product_id: int, mark: Mark, opens_at_ms: int, now_us: int) -> None:
        """admit.lua, asked after ``mark``, answered "not open" at ``now_us`` (its clock) for a
        sale opening at ``opens_at_ms`` (the same clock)."""
        left = opens_at_ms / 1000 - now_us / 1_000_000 - EARLY_SECONDS
        if left > 0:
            self.hold(product_id, mark, min(left, LATCH_SECONDS), opens_at_ms)

    def opens_at_ms(self, product_id: int) -> int | None:
        """When the product's sale opens, while the latch holds; else None (ask Redis)."""
        return self.fact(product_id)


async def follow_gate_changes(redis: aioredis.Redis, *latches: ProductLatch) -> None:
    """Clear latches as gate and sale changes are announced (all of them after a lost
    connection)."""

    def cleared(data: str) -> None:
        with contextlib.suppress(ValueError):
            product_id = int(data)
            for latch in latches:
                latch.clear(product_id)

    def cleared_all() -> None:
        for latch in latches:
            latch.clear()

    await follow_channel(redis, GATE_CHANNEL, cleared, cleared_all)
