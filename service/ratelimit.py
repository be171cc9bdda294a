"""Token-bucket decisions from ``lua/token_bucket.lua`` and the headers that report them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.lua import Scripts

MICRO = 1_000_000


@dataclass(frozen=True, slots=True)
class Limit:
    """One token bucket: ``capacity`` tokens, refilled at ``refill_per_sec``."""

    name: str
    capacity: int
    refill_per_sec: float

    @property
    def refill_micro_per_sec(self) -> int:
        return max(1, round(self.refill_per_sec * MICRO))

    @property
    def window_seconds(self) -> int:
        """Seconds an empty bucket takes to fill: the policy's window."""
        return max(1, math.ceil(self.capacity / self.refill_per_sec))


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after_ms: int
    reset_ms: int

    @property
    def retry_after_seconds(self) -> int:
        """``Retry-After`` is whole seconds: round up, so a client never comes back too early."""
        return max(1, math.ceil(self.retry_after_ms / 1000))


def bucket_key(limit: Limit, identity: str) -> str:
    return f"fs:rl:{{{limit.name}:{identity}}}"


async def take(scripts: Scripts, limit: Limit, identity: str, cost: int = 1) -> Decision:
    """Charge ``cost`` tokens from ``identity``'s bucket, or deny without charging."""
    allowed, remaining, retry_ms, reset_ms = await scripts.token_bucket(
        keys=[bucket_key(limit, identity)],
        args=[limit.capacity, limit.refill_micro_per_sec, cost],
    )
    return Decision(bool(allowed), int(remaining), int(retry_ms), int(reset_ms))


def ratelimit_headers(limit: Limit, decision: Decision) -> dict[str, str]:
    """IETF RateLimit-Policy / RateLimit fields (structured-field form), plus Retry-After on a deny."""
    reset_seconds = math.ceil((decision.retry_after_ms or decision.reset_ms) / 1000)
    headers = {
        "RateLimit-Policy": f'"{limit.name}";q={limit.capacity};w={limit.window_seconds}',
        "RateLimit": f'"{limit.name}";r={decision.remaining};t={reset_seconds}',
    }
    if not decision.allowed:
        headers["Retry-After"] = str(decision.retry_after_seconds)
    return headers
