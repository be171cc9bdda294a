"""Prometheus metrics of our own (request counts and latency come from Litestar's plugin)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

LIMITER_DECISIONS = Counter(
    "flashsale_limiter_decisions",
    "Rate-limiter decisions by route and outcome "
    "(admitted, limited, limited_cached, failed_open, failed_closed, unlimited).",
    ["route", "outcome"],
)
LIMITER_DEGRADED = Gauge(
    "flashsale_limiter_degraded",
    "1 while the limiter's circuit breaker is open or probing (Redis failing), else 0.",
)
