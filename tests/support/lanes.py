"""A product's lanes as a test sees them: every pending entry and every draining flag."""

from __future__ import annotations

from redis import Redis

from service.core.keys import drain_flag_keys, pending_keys


def pending_count(redis: Redis, product_id: int = 1) -> int:
    """Entries on every lane of the product."""
    with redis.pipeline(transaction=False) as pipe:
        for key in pending_keys(product_id):
            pipe.llen(key)
        return sum(pipe.execute())


def drains(redis: Redis, product_id: int = 1) -> dict[int, str]:
    """lane -> the draining job its flag names, for every lane that has one."""
    flags = redis.mget(drain_flag_keys(product_id))
    return {lane: flag.decode() for lane, flag in enumerate(flags) if flag is not None}
