"""Each API process remembers which products are sold out, so their "no" needs neither
Redis nor PostgreSQL; a message on the gate channel (restock, returned units) clears it.

A latch also lapses after ``LATCH_SECONDS``: should a message be missed (a dropped
subscription), the next request asks Redis again and latches anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.core.keys import GATE_CHANNEL
from service.core.metrics import SOLD_OUT_LATCH_ANSWERS, SOLD_OUT_LATCHED

log = logging.getLogger(__name__)
LATCH_SECONDS = 5.0
RESUBSCRIBE_SECONDS = 1.0


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
    """Clear latches as gate changes are announced; resubscribe after a lost connection."""
    while True:
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(GATE_CHANNEL)
                latch.clear()  # anything may have changed while we were not listening
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        with contextlib.suppress(ValueError):
                            latch.clear(int(message["data"]))
        except (RedisError, OSError) as exc:
            log.warning("gate channel lost; resubscribing", extra={"error": type(exc).__name__})
            await asyncio.sleep(RESUBSCRIBE_SECONDS)
