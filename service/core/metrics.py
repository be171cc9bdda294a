"""Prometheus metrics of the API process (the worker's are in worker/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUEST_LABELS = ["method", "path", "status_code", "app_name"]
"""``path`` is the route's template (``/orders/{order_id}``), never the raw path."""
REQUESTS = Counter("flashsale_requests", "HTTP requests answered.", REQUEST_LABELS)
REQUEST_SECONDS = Histogram(
    "flashsale_request_duration_seconds", "Time from a request's arrival to its answer.", REQUEST_LABELS
)
REQUEST_ERRORS = Counter("flashsale_requests_error", "HTTP requests answered with a 5xx.", REQUEST_LABELS)

PIPELINE_CALLS = Histogram(
    "flashsale_redis_pipeline_calls",
    "Script calls per auto-pipelined write to Redis (how much concurrent requests share).",
    ["script"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
LIMITER_DECISIONS = Counter(
    "flashsale_limiter_decisions",
    "Rate-limiter decisions by route and outcome "
    "(admitted, limited, limited_cached, shadow_limited, failed_open, failed_closed, unlimited, "
    "allow_listed).",
    ["route", "outcome"],
)
RATE_POLICY_LOADED = Gauge(
    "flashsale_rate_policy_loaded_timestamp_seconds",
    "When this process loaded the rate-limit policy it enforces (unix seconds), labelled with the "
    "policy's digest: every pod should show the same one.",
    ["digest"],
)
POLICY_RELOAD_ERRORS = Counter(
    "flashsale_policy_reload_errors",
    "Changed policy files that failed validation and were ignored (the policy in force stays).",
)
LIMITER_DEGRADED = Gauge(
    "flashsale_limiter_degraded",
    "1 while the limiter's circuit breaker is open or probing (Redis failing), else 0.",
)
SOLD_OUT_LATCHED = Gauge(
    "flashsale_sold_out_latched",
    "Products this API process knows to be sold out (it answers 409 for them without Redis).",
)
SOLD_OUT_LATCH_ANSWERS = Counter(
    "flashsale_sold_out_latch_answers",
    "409 sold-out answers given from the latch, without a Redis call.",
)
NOT_OPEN_LATCH_ANSWERS = Counter(
    "flashsale_not_open_latch_answers",
    "409 sale-not-open answers given from the latch before a sale opens, without a Redis call.",
)
QUEUE_WAITING = Gauge(
    "flashsale_queue_depth",
    "Draining jobs waiting in RQ's queue (one per lane of a product with orders waiting and no "
    "running drain), sampled from Redis by each API pod.",
    ["queue"],
)
QUEUE_RUNNING = Gauge(
    "flashsale_queue_in_flight",
    "Draining jobs that workers are running now (RQ's started registry, live entries only).",
    ["queue"],
)
QUEUE_BACKLOG = Gauge(
    "flashsale_queue_backlog",
    "Waiting plus running draining jobs (at most one per lane of a product: the orders are "
    "flashsale_orders_undecided, which worker autoscaling follows).",
    ["queue"],
)
ORDERS_UNDECIDED = Gauge(
    "flashsale_orders_undecided",
    "Orders admitted and not yet decided (fs:admitted), sampled by each API pod: what "
    "worker autoscaling follows (GET /backlog's undecided_orders).",
)
OLDEST_UNDECIDED_AGE = Gauge(
    "flashsale_orders_oldest_undecided_age_seconds",
    "How long the oldest undecided order has waited, by Redis's clock; 0 when none waits "
    "(GET /backlog's oldest_age_seconds).",
)


def set_queue_gauges(queue: str, waiting: int, running: int) -> None:
    QUEUE_WAITING.labels(queue).set(waiting)
    QUEUE_RUNNING.labels(queue).set(running)
    QUEUE_BACKLOG.labels(queue).set(waiting + running)


def set_backlog_gauges(undecided_orders: int, oldest_age_seconds: float) -> None:
    """What ``service.sale.backlog.read_backlog`` read."""
    ORDERS_UNDECIDED.set(undecided_orders)
    OLDEST_UNDECIDED_AGE.set(oldest_age_seconds)
