"""Outcomes of ``POST /buy`` per second, summed over every API process, for the dashboard.

The dashboard is served by one pod of many, so its own counters would show a fraction of the
sale. Each process counts its answers in memory (a dict increment: no Redis call on the
request path) and flushes them once a second in one pipeline of ``HINCRBY fs:stats:<unix
second> <outcome> n``; any pod's dashboard then reads the same hashes and sees the cluster.

Outcomes are a bounded set taken from the final HTTP status, which is why they are counted in
``service.api.front_door``, outside Litestar: it sees every answer, 429s and problem details from
exception handlers and the cheap no's included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.core.keys import stats_key

log = logging.getLogger(__name__)

OUTCOMES = ("admitted", "replayed", "limited", "sold_out", "refused", "failed")
"""202 new order, 202 idempotent replay of an earlier one, 429, 409 (sold out, sale closed or
not open, purchase limit), any other 4xx, 5xx."""
STATS_TTL_SECONDS = 300
"""A second's hash outlives the dashboard's window by minutes, then Redis drops it."""
FLUSH_SECONDS = 1.0
BUY_PATH = "/buy"
_REPLAYED_HEADER = b"idempotent-replayed"


def outcome_of(status: int, replayed: bool = False) -> str | None:
    if status == 202:
        return "replayed" if replayed else "admitted"
    if status == 429:
        return "limited"
    if status == 409:
        return "sold_out"
    if 400 <= status < 500:
        return "refused"
    if status >= 500:
        return "failed"
    return None


class OutcomeCounter:
    """Counts per (unix second, outcome) since the last flush; touched only on the event loop."""

    def __init__(self) -> None:
        self._counts: dict[tuple[int, str], int] = {}

    def count(self, outcome: str, second: int | None = None) -> None:
        key = (int(time.time()) if second is None else second, outcome)
        self._counts[key] = self._counts.get(key, 0) + 1

    def take(self) -> dict[tuple[int, str], int]:
        """Everything counted since the last take, leaving the counter empty."""
        taken, self._counts = self._counts, {}
        return taken

    async def flush(self, redis: aioredis.Redis) -> int:
        """Write the counts in one pipeline; returns how many answers it carried. On a Redis
        error the counts stay for the next flush (those whose key would already have expired
        are dropped, so an outage cannot grow them without bound) and the error is raised."""
        taken = self.take()
        if not taken:
            return 0
        pipe = redis.pipeline(transaction=False)
        for (second, outcome), n in taken.items():
            pipe.hincrby(stats_key(second), outcome, n)
        for second in {second for second, _ in taken}:
            pipe.expire(stats_key(second), STATS_TTL_SECONDS)
        try:
            # Bookkeeping, not a request: no span a second in every pod's traces.
            with suppress_instrumentation():
                await pipe.execute()
        except (RedisError, OSError):
            self._give_back(taken)
            raise
        return sum(taken.values())

    def _give_back(self, taken: dict[tuple[int, str], int]) -> None:
        oldest = int(time.time()) - STATS_TTL_SECONDS
        for key, n in taken.items():
            if key[0] > oldest:
                self._counts[key] = self._counts.get(key, 0) + n


OUTCOME_COUNTS = OutcomeCounter()
"""This process's counter: the middleware adds to it, the lifespan's flusher empties it."""


async def flush_forever(redis: aioredis.Redis, counter: OutcomeCounter = OUTCOME_COUNTS) -> None:
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        try:
            await counter.flush(redis)
        except (RedisError, OSError) as exc:  # readiness reports Redis; the counts wait
            log.debug("sale stats flush skipped", extra={"error": type(exc).__name__})


def replayed_in(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == _REPLAYED_HEADER for name, _ in headers)


async def read_outcomes(redis: aioredis.Redis, first: int, last: int) -> list[dict[str, int]]:
    """Per second from ``first`` to ``last`` (inclusive), every outcome summed over all pods."""
    seconds = range(first, last + 1)
    pipe = redis.pipeline(transaction=False)
    for second in seconds:
        pipe.hgetall(stats_key(second))
    rows = await pipe.execute()
    return [
        {"second": second, **{outcome: int(row.get(outcome, 0)) for outcome in OUTCOMES}}
        for second, row in zip(seconds, rows, strict=True)
    ]
