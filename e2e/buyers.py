"""Buyers as the e2e tests need them: distinct client addresses, and a paced sale whose buyers
retry lost answers with their Idempotency-Key, as a careful client does."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.support.load import NO_ANSWER

RETRYABLE = {NO_ANSWER, 502, 503, 504}
"""No answer, or the ingress/replica could not finish: the request may or may not have been
admitted, so the client asks again with the same key (a replay returns the first 202)."""
ATTEMPTS = 6


def addresses(count: int, network: int) -> list[str]:
    """``count`` distinct client addresses in 10.<network>.0.0/16 (a network per test, so one
    test's rate-limit buckets never meet another's)."""
    return [f"10.{network}.{i // 256 % 256}.{i % 256}" for i in range(count)]


def one_client_address() -> str:
    """A client no earlier run has used, so its token bucket is full (runs may follow closely)."""
    return f"10.250.{random.randrange(256)}.{random.randrange(1, 255)}"


@dataclass
class Outcome:
    status: int = NO_ANSWER
    order_id: str | None = None
    attempts: int = 0
    seconds: float = 0.0
    """From the first ask to the final answer."""
    lost_at: list[float] = field(default_factory=list)
    """time.monotonic() of each answer that was lost (and asked again)."""


@dataclass
class PacedSale:
    """Buyers arrive at ``rate`` per second (a sale that lasts, so faults land in its middle),
    each buying once and retrying an unknown outcome with its Idempotency-Key."""

    base_url: str
    clients: list[str]
    rate: float
    outcomes: list[Outcome] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="e2e-sale", daemon=True)
        thread.start()
        return thread

    async def _run(self) -> None:
        self.outcomes = [Outcome() for _ in self.clients]
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
        try:
            async with httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=30) as client:
                started = time.monotonic()
                tasks = []
                for index, address in enumerate(self.clients):
                    # The arrival schedule of the sale, not a wait for some condition.
                    await asyncio.sleep(max(0.0, started + index / self.rate - time.monotonic()))
                    tasks.append(asyncio.create_task(self._buy(client, address, self.outcomes[index])))
                await asyncio.gather(*tasks)
        finally:
            self.done.set()

    async def _buy(self, client: httpx.AsyncClient, address: str, outcome: Outcome) -> None:
        headers = {"x-forwarded-for": address, "idempotency-key": f"e2e-{uuid.uuid4()}"}
        started = time.monotonic()
        for attempt in range(ATTEMPTS):
            outcome.attempts = attempt + 1
            try:
                response = await client.post("/buy", json={}, headers=headers)
                outcome.status = response.status_code
            except httpx.TransportError:
                outcome.status = NO_ANSWER
            if outcome.status not in RETRYABLE:
                break
            outcome.lost_at.append(time.monotonic())
            await asyncio.sleep(0.2 * 2**attempt)  # a client's backoff before asking again
        outcome.seconds = time.monotonic() - started
        if outcome.status == 202:
            outcome.order_id = response.json()["order_id"]

    def statuses(self) -> Counter:
        return Counter(o.status for o in self.outcomes)

    def lost_at(self) -> list[float]:
        """When answers were lost, over all buyers."""
        return sorted(t for o in self.outcomes for t in o.lost_at)

    def admitted(self) -> list[str]:
        return sorted({o.order_id for o in self.outcomes if o.order_id})
