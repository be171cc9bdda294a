"""A pure-Python model of lua/token_buckets.lua and lua/refund_buckets.lua with Redis's clock
(the default mode).

Same integer arithmetic, replayed at the time the script reports, so every decision and
every header value can be compared. A bucket that Redis let expire is full, and so is one
the model refills to capacity: the two are indistinguishable, so the model needs no TTLs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MICRO = 1_000_000


@dataclass
class BucketModel:
    buckets: dict[str, tuple[int, int]] = field(default_factory=dict)
    """key -> (micro-tokens, µs of the last refill)"""

    def call(self, now: int, keys: list[str], limits: list[tuple[int, int, int]]) -> list[int]:
        """``limits`` holds (capacity, refill micro-tokens/s, cost) per key, a negative cost for a
        limit in shadow (it never denies, and is charged only when it has room); returns the
        script's reply."""
        state = []
        admitted = 1
        for key, (capacity, rate, cost) in zip(keys, limits, strict=True):
            shadow, capacity, cost = cost < 0, capacity * MICRO, abs(cost) * MICRO
            tokens, stamp = self._refilled(key, capacity, rate, now)
            if tokens < cost and not shadow:
                admitted = 0
            state.append([capacity, rate, cost, tokens, stamp, shadow])
        reply = [admitted, now]
        for key, (capacity, rate, cost, tokens, stamp, shadow) in zip(keys, state, strict=True):
            retry = _ms_to_fill(cost - tokens, rate)
            if admitted and cost > 0 and not (shadow and tokens < cost):
                tokens -= cost
                self.buckets[key] = (tokens, stamp)
            reply += [int(retry == 0), tokens // MICRO, retry, _ms_to_fill(capacity - tokens, rate)]
        return reply

    def refund(self, now: int, keys: list[str], limits: list[tuple[int, int, int]]) -> list[int]:
        """refund_buckets.lua: each cost back, never past capacity; returns the script's reply."""
        reply = [1, now]
        for key, (capacity, rate, cost) in zip(keys, limits, strict=True):
            capacity, cost = capacity * MICRO, abs(cost) * MICRO
            tokens, stamp = self._refilled(key, capacity, rate, now)
            if cost > 0:
                tokens = min(capacity, tokens + cost)
                self.buckets[key] = (tokens, stamp)
            retry = _ms_to_fill(cost - tokens, rate)
            reply += [int(retry == 0), tokens // MICRO, retry, _ms_to_fill(capacity - tokens, rate)]
        return reply

    def _refilled(self, key: str, capacity: int, rate: int, now: int) -> tuple[int, int]:
        tokens, stamp = self.buckets.get(key, (capacity, now))
        if now > stamp:
            return min(capacity, tokens + (now - stamp) * rate // MICRO), now
        return tokens, stamp


def _ms_to_fill(missing: int, rate: int) -> int:
    return 0 if missing <= 0 else math.ceil(missing * 1000 / rate)
