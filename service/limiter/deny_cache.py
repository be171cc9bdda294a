"""Buckets this process knows are empty, and until when: a 429 that needs no Redis call.

Exact for a token bucket: only time refills it, so nothing can make it admit sooner; except a
refund (a request charged on a separate limiter Redis, then refused by the main one), which
forgets the refunded keys in the process that made it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

MAX_ENTRIES = 100_000
"""Bounded, so a flood of distinct clients cannot grow it without end (about 15 MB)."""


class DenyCache:
    def __init__(self, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic):
        self._until: dict[str, float] = {}
        self._max_entries = max_entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._until)

    def deny(self, key: str, seconds: float) -> None:
        if len(self._until) >= self._max_entries:
            self._evict()
        self._until.pop(key, None)  # re-insert at the end: the dict stays in expiry-ish order
        self._until[key] = self._clock() + seconds

    def forget(self, keys: Iterable[str]) -> None:
        """Drop these keys: their buckets got tokens back (a refund), not only time."""
        for key in keys:
            self._until.pop(key, None)

    def clear(self) -> None:
        """Forget everything: the limits changed (a new policy), so the times known are not."""
        self._until.clear()

    def remaining(self, keys: Iterable[str]) -> tuple[str, float] | None:
        """The first of ``keys`` still denied and for how many seconds, or None."""
        now = self._clock()
        for key in keys:
            until = self._until.get(key)
            if until is None:
                continue
            if until > now:
                return key, until - now
            del self._until[key]
        return None

    def _evict(self) -> None:
        now = self._clock()
        for key in [k for k, until in self._until.items() if until <= now]:
            del self._until[key]
        while len(self._until) >= self._max_entries:
            del self._until[next(iter(self._until))]
