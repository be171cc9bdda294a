"""The dashboard's snapshot of a sale: one JSON document, taken at most once a second per process.

Where each number comes from:

* products: name and units left from PostgreSQL (``products.stock``: the truth), what is still
  sellable from the stock gate in Redis;
* outcomes of ``POST /buy`` per second, summed over every API pod (``service.sale.stats``);
* the queue: jobs waiting (``LLEN`` of RQ's list), in flight (RQ's started registry, live
  entries), admitted orders not yet decided (``fs:admitted``), live workers (RQ's worker
  registry for the queue, each worker's key still alive);
* orders: confirmed / rejected counts, confirm latency p50 / p95 (``decided_at - admitted_at``
  over the orders decided in the last minute, confirmed or rejected: a buyer waits for either;
  in SQL, from timestamps written by PostgreSQL and the API) and
  the most recent decided orders.

It never carries a client id or address: the dashboard is shown on screens during a drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from anyio import to_thread
from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis import Redis
from rq import Queue, worker_registration
from sqlalchemy import Engine, text

from service.core.keys import ADMITTED_KEY, gate_key
from service.sale.order_jobs import count_queue
from service.sale.resources import Resources
from service.sale.stats import OUTCOMES, read_outcomes

WINDOW_SECONDS = 60
"""Outcomes and confirm latency cover this many seconds."""
RECENT_ORDERS = 10
FRESH_SECONDS = 1.0
"""Every stream and snapshot request of a process within this long shares one snapshot."""

_PRODUCTS = text("SELECT id, name, stock FROM products ORDER BY id")
_COUNTS = text("SELECT status, count(*) AS n FROM orders GROUP BY status")
_LATENCY = text(
    """
    SELECT count(*) AS n,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY latency) AS p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency) AS p95
    FROM (SELECT extract(epoch FROM decided_at - admitted_at) * 1000 AS latency
          FROM orders
          WHERE decided_at > now() - make_interval(secs => :window)) AS recent
    """
)
# No client_id: the dashboard shows no personal data.
_RECENT = text(
    """
    SELECT id, product_id, quantity, status, reason,
           extract(epoch FROM decided_at - admitted_at) * 1000 AS latency_ms
    FROM orders
    ORDER BY decided_at DESC, id
    LIMIT :limit
    """
)


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


def _from_database(engine: Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        products = connection.execute(_PRODUCTS).all()
        counts = {row.status: row.n for row in connection.execute(_COUNTS)}
        latency = connection.execute(_LATENCY, {"window": WINDOW_SECONDS}).one()
        recent = connection.execute(_RECENT, {"limit": RECENT_ORDERS}).all()
    return {
        "products": [{"id": row.id, "name": row.name, "stock": row.stock} for row in products],
        "orders": {
            "confirmed": counts.get("confirmed", 0),
            "rejected": counts.get("rejected", 0),
            "latency_ms": {"decided": latency.n, "p50": _round(latency.p50), "p95": _round(latency.p95)},
            "recent": [
                {
                    "order_id": str(row.id),
                    "product_id": row.product_id,
                    "quantity": row.quantity,
                    "status": row.status,
                    "reason": row.reason,
                    "latency_ms": _round(row.latency_ms),
                }
                for row in recent
            ],
        },
    }


def live_workers(queue: Queue) -> int:
    """Workers registered for the queue whose heartbeat key has not expired: a killed worker
    stays in RQ's registry until a sweep removes it, but its key dies with its heartbeat."""
    keys = worker_registration.get_keys(queue=queue)
    if not keys:
        return 0
    redis: Redis = queue.connection
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.exists(key)
    return sum(pipe.execute())


def _blocking_part(engine: Engine, queue: Queue) -> dict[str, Any]:
    return {**_from_database(engine), "workers": live_workers(queue)}


async def take_snapshot(resources: Resources) -> dict[str, Any]:
    now = time.time()
    second = int(now)
    blocking = await to_thread.run_sync(_blocking_part, resources.engine, resources.queue)
    products = blocking["products"]
    redis = resources.redis
    queue = resources.queue
    async with redis.pipeline(transaction=False) as pipe:
        count_queue(pipe, queue)
        pipe.zcard(ADMITTED_KEY)
        for product in products:
            pipe.get(gate_key(product["id"]))
        waiting, in_flight, undecided, *gates = await pipe.execute()
    for product, gate in zip(products, gates, strict=True):
        # No gate yet (never sold since a Redis loss): the database's stock is what /buy rebuilds it from.
        product["available"] = max(0, product["stock"] if gate is None else int(gate))
        product["sold_out"] = product["available"] == 0
    series = await read_outcomes(resources.redis, second - WINDOW_SECONDS + 1, second)
    # Pods flush once a second, so the second before last is the newest one every pod has written.
    complete = series[-3] if len(series) >= 3 else series[0]
    return {
        "at": round(now, 3),
        "products": products,
        "units_left": sum(product["stock"] for product in products),
        "outcomes": {
            "window_seconds": WINDOW_SECONDS,
            "last_second": complete,
            "totals": {outcome: sum(row[outcome] for row in series) for outcome in OUTCOMES},
            "series": series,
        },
        "queue": {
            "waiting": waiting,
            "in_flight": in_flight,
            "undecided": undecided,
            "workers": blocking["workers"],
        },
        "orders": blocking["orders"],
    }


class DashboardFeed:
    """One process's snapshots, shared by every open dashboard, and the signal that closes
    their streams when the server shuts down."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
        self._latest: dict[str, Any] | None = None
        self._taken_at = 0.0
        self._lock = asyncio.Lock()
        self.closing = asyncio.Event()
        """Set when the process is asked to stop: every event stream ends at once."""

    async def snapshot(self) -> dict[str, Any]:
        async with self._lock:
            if self._latest is None or time.monotonic() - self._taken_at >= FRESH_SECONDS:
                # The dashboard's routes are untraced; so are the queries behind them (the
                # thread they run in inherits this context).
                with suppress_instrumentation():
                    self._latest = await take_snapshot(self._resources)
                self._taken_at = time.monotonic()
            return self._latest

    def close(self) -> None:
        self.closing.set()


_SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def close_on_shutdown_signal(feed: DashboardFeed) -> Callable[[], None]:
    """End the event streams as soon as SIGTERM/SIGINT arrives, then let the server's own
    handler run; returns a function that puts the handlers back.

    uvicorn waits for open responses before it shuts the app's lifespan down, so an event
    stream that only stopped at lifespan shutdown would hold every graceful stop for the full
    timeout. The server (uvicorn) installed its handlers before starting the lifespan; they are
    chained, never replaced. Where there is no such handler (tests, a non-main thread) nothing
    changes."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in _SHUTDOWN_SIGNALS}

    def make_handler(server_handler):
        def handler(sig, frame):
            loop.call_soon_threadsafe(feed.close)  # signal handlers must not touch the loop directly
            server_handler(sig, frame)

        return handler

    installed = {}
    for sig, server_handler in previous.items():
        if callable(server_handler):
            installed[sig] = make_handler(server_handler)
            signal.signal(sig, installed[sig])

    def restore() -> None:
        for sig, handler in installed.items():
            # Only ours: the server may already have put its originals back on its way out.
            if signal.getsignal(sig) is handler:
                with contextlib.suppress(ValueError):
                    signal.signal(sig, previous[sig])

    return restore
