"""What is really waiting for a worker: the signal worker autoscaling follows.

``fs:admitted`` holds every order admitted and not yet decided, scored by its admission time
(ms): retries and orders whose job RQ lost included, and each counted once, however many of
them one job's batch will decide. RQ's job list counts jobs instead, most of which find their
order decided already by another job's batch. KEDA reads this through ``GET /backlog``
(its ``metrics-api`` scaler); the API's ``/metrics`` carries the same two numbers for an
External-metric HPA.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta
from redis import asyncio as aioredis

from service.core.keys import ADMITTED_KEY


class Backlog(msgspec.Struct, frozen=True):
    """The chart's KEDA triggers read these two fields by name."""

    undecided_orders: Annotated[
        int, Meta(ge=0, description="Orders admitted (202) and not yet confirmed or rejected.")
    ]
    oldest_age_seconds: Annotated[
        float,
        Meta(ge=0, description="How long the oldest of them has waited, by Redis's clock; 0 when none."),
    ]


async def read_backlog(redis: aioredis.Redis) -> Backlog:
    """Both numbers from one MULTI on the main Redis, so they describe the same instant; the
    age is measured on Redis's clock, the one admit.lua scores orders with by default."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.time()
        pipe.zcard(ADMITTED_KEY)
        pipe.zrange(ADMITTED_KEY, 0, 0, withscores=True)
        (seconds, microseconds), undecided, oldest = await pipe.execute()
    if not oldest:
        return Backlog(undecided_orders=undecided, oldest_age_seconds=0.0)
    now_ms = seconds * 1000 + microseconds / 1000
    # An order scored by another clock (FLASHSALE_RATE_CLOCK=app, or the tests' direct
    # enqueue) may sit a little in the future: it has not waited yet.
    age = max(0.0, round((now_ms - oldest[0][1]) / 1000, 3))  # scores are whole ms
    return Backlog(undecided_orders=undecided, oldest_age_seconds=age)
