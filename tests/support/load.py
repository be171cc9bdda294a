"""Many clients at once: several processes, each firing its share of requests concurrently."""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
import uuid
from dataclasses import dataclass

import httpx

NO_ANSWER = 0
RUN = uuid.uuid4().hex[:8]
"""Part of every Idempotency-Key, so runs against the same Redis never share keys."""


@dataclass(frozen=True)
class Reply:
    status: int
    order_id: str | None
    retry_after: str | None
    sent_at: float
    """time.time() when the request was sent."""
    done_at: float


async def _fire_share(
    urls: list[str], share: list[tuple[int, str, dict]], per_second: float | None
) -> list[Reply]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        in_flight = asyncio.Semaphore(64)  # httpx's own pool slows down badly with many waiters
        started = time.monotonic()

        async def one(index: int, client_ip: str, body: dict) -> Reply:
            if per_second:  # the sale's arrival schedule, not a wait for some condition
                await asyncio.sleep(max(0.0, started + index / per_second - time.monotonic()))
            headers = {"x-forwarded-for": client_ip}
            async with in_flight:
                sent = time.time()
                try:
                    response = await client.post(f"{urls[index % len(urls)]}/buy", json=body, headers=headers)
                except httpx.TransportError:  # no answer at all: recorded as status 0
                    return Reply(NO_ANSWER, None, None, sent, time.time())
            order_id = response.json().get("order_id") if response.status_code == 202 else None
            return Reply(
                response.status_code, order_id, response.headers.get("retry-after"), sent, time.time()
            )

        return await asyncio.gather(*(one(*request) for request in share))


def _client_process(urls, share, start, per_second) -> list[Reply]:
    start.wait()
    return asyncio.run(_fire_share(urls, share, per_second))


def fire_concurrently(
    urls: list[str],
    buyers: list[tuple[str, dict]],
    processes: int = 4,
    per_second: float | None = None,
) -> list[Reply]:
    """Each buyer is (client ip, body); all processes start together on one signal. With ``per_second`` the
    n-th buyer asks n / per_second seconds after the start (a sale that lasts), else all at once."""
    requests = [(i, ip, body) for i, (ip, body) in enumerate(buyers)]
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(processes) as pool:
        start = manager.Event()
        pending = [
            pool.apply_async(_client_process, (urls, requests[p::processes], start, per_second))
            for p in range(processes)
        ]
        start.set()
        return [reply for result in pending for reply in result.get(timeout=120)]


def _hammer_process(urls, clients, seconds, start) -> list[tuple[int, Reply]]:
    """Clients (header sets) asking in turn as fast as they can for ``seconds``, round robin
    over the replicas; returns (client index, reply) pairs."""
    start.wait()
    replies = []
    with httpx.Client(timeout=10) as client:
        deadline = time.time() + seconds
        index = 0
        while time.time() < deadline:
            who, headers = clients[index % len(clients)]
            sent = time.time()
            response = client.post(f"{urls[index % len(urls)]}/buy", json={}, headers=headers)
            retry_after = response.headers.get("retry-after")
            replies.append((who, Reply(response.status_code, None, retry_after, sent, time.time())))
            index += 1
    return replies


def hammer_clients(
    urls: list[str], clients: list[dict[str, str]], seconds: float, processes: int = 4
) -> dict[int, list[Reply]]:
    """Every client hammers ``POST /buy`` for ``seconds``; replies grouped by client index."""
    numbered = list(enumerate(clients))
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(processes) as pool:
        start = manager.Event()
        pending = [
            pool.apply_async(_hammer_process, (urls, numbered[p::processes] or numbered, seconds, start))
            for p in range(processes)
        ]
        start.set()
        grouped: dict[int, list[Reply]] = {}
        for result in pending:
            for who, reply in result.get(timeout=seconds + 60):
                grouped.setdefault(who, []).append(reply)
    return grouped


def hammer(urls: list[str], client_ip: str, seconds: float, processes: int = 4) -> list[Reply]:
    """One client, from several processes at once."""
    clients = [{"x-forwarded-for": client_ip}] * processes
    return [
        reply for replies in hammer_clients(urls, clients, seconds, processes).values() for reply in replies
    ]


def assert_admitted_within(replies, bound_for):
    """Only whole tokens are ever handed out: between floor(bound) - 1 and bound + 1 admitted,
    the upper bound over the whole exchange, the lower over the time requests were still sent."""
    first_sent = min(r.sent_at for r in replies)
    upper = bound_for(max(r.done_at for r in replies) - first_sent) + 1
    lower = math.floor(bound_for(max(r.sent_at for r in replies) - first_sent)) - 1
    admitted = sum(r.status == 202 for r in replies)
    assert len(replies) > 5 * upper, "the client must ask far more than it may have"
    assert {r.status for r in replies} <= {202, 429}
    assert lower <= admitted <= upper, (lower, admitted, upper)
