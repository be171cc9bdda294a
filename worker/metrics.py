"""The worker's Prometheus metrics, served on FLASHSALE_WORKER_METRICS_PORT.

Counted where an order is decided for the first time (``applied_now``), so an order decided
in another job's batch and seen again by its own job counts once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping

from prometheus_client import Counter as PrometheusCounter
from prometheus_client import Histogram, start_http_server
from redis import Redis
from rq import Queue

from db.orders import AdmittedOrder, Outcome
from service.core.metrics import set_queue_gauges
from service.sale.order_jobs import count_queue

ORDERS_DECIDED = PrometheusCounter(
    "flashsale_orders_decided",
    "Orders decided by workers, by status (confirmed, rejected) and reason (sold_out, failed…).",
    ["status", "reason"],
)
LOCK_CONFLICTS = PrometheusCounter(
    "flashsale_order_lock_conflicts",
    "Optimistic-lock updates that lost to another worker and were retried.",
)
JOB_RETRIES = PrometheusCounter(
    "flashsale_order_job_retries",
    "Order jobs run again after a failure (their second and later attempts).",
)
DECIDE_SECONDS = Histogram(
    "flashsale_order_decide_seconds",
    "From the order's 202 (admission) to the worker's decision.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def serve_metrics(port: int) -> None:
    """Serve /metrics from a thread of this worker process."""
    start_http_server(port)


def observe_batch(orders: Mapping[object, AdmittedOrder], outcomes: Mapping[object, Outcome]) -> None:
    """Count the orders this batch decided now, and how long each waited since its 202."""
    now = time.time()
    conflicts = 0
    decided: Counter[tuple[str, str]] = Counter()  # a batch holds a few kinds: one inc() each
    for order_id, outcome in outcomes.items():
        if not outcome.applied_now:
            continue
        conflicts = max(conflicts, outcome.conflicts)  # one transaction: the same count for all
        decided[outcome.status, outcome.reason or ""] += 1
        DECIDE_SECONDS.observe(max(0.0, now - orders[order_id].admitted_at.timestamp()))
    for (status, reason), count in decided.items():
        ORDERS_DECIDED.labels(status, reason).inc(count)
    LOCK_CONFLICTS.inc(conflicts)


def sample_queue(connection: Redis, queue: Queue) -> None:
    """The queue gauges (also on the API), from this worker's view of Redis."""
    with connection.pipeline(transaction=False) as pipe:
        count_queue(pipe, queue)
        set_queue_gauges(queue.name, *pipe.execute())
