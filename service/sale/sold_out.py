"""Each API process remembers which products are sold out, so their "no" needs neither
Redis nor PostgreSQL; a message on the gate channel (restock, returned units) clears it.

A latch also lapses after ``LATCH_SECONDS``: should a message be missed (a dropped
subscription), the next request asks Redis again and latches anew.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from redis import asyncio as aioredis

from service.core.channels import follow_channel
from service.core.keys import GATE_CHANNEL
from service.core.metrics import SOLD_OUT_LATCH_ANSWERS, SOLD_OUT_LATCHED

LATCH_SECONDS = 5.0


class SoldOutLatch:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._until: dict[int, float] = {}
        self._clock = clock

    def latch(self, product_id: int) -> None:
        self._until[product_id] = self._clock() + LATCH_SECONDS
        SOLD_OUT_LATCHED.set(len(self._until))

    def is_sold_out(self, product_id: int) -> bool:
        until = self._until.get(product_id)
        if until is None:
            return False
        if until > self._clock():
            SOLD_OUT_LATCH_ANSWERS.inc()
            return True
        self.clear(product_id)
        return False

    def clear(self, product_id: int | None = None) -> None:
        """Forget one product's latch, or every latch."""
        if product_id is None:
            self._until.clear()
        else:
            self._until.pop(product_id, None)
        SOLD_OUT_LATCHED.set(len(self._until))


async def follow_gate_changes(redis: aioredis.Redis, latch: SoldOutLatch) -> None:
    """Clear latches as gate changes are announced (all of them after a lost connection)."""

    def cleared(data: str) -> None:
        with contextlib.suppress(ValueError):
            latch.clear(int(data))

    await follow_channel(redis, GATE_CHANNEL, cleared, latch.clear)
