"""Every Redis key and channel name flashsale writes, and the RQ names it computes: built here only.

``tests/test_layout.py`` fails on an ``fs:`` literal anywhere else in the product. Keys of one
product share the hash tag ``{p:<id>}`` and a bucket's keys share one too, so every Lua call
touches one Redis Cluster slot. ``lua/README.md`` lists which keys each script is given.
"""

from __future__ import annotations

from rq.job import Job

# The main Redis
ADMITTED_KEY = "fs:admitted"
"""Sorted set of order job ids admitted and not yet decided, scored by admission time (ms):
our own record, so no order can strand between RQ's lists (see worker/stranded.py)."""
GATE_CHANNEL = "fs:gate"
"""Pub/sub: a product id whenever units come back to its gate (sold-out latches clear)."""
LIMIT_RESET_CHANNEL = "fs:limits:reset"
"""Pub/sub: the bucket keys an admin just refilled, so every API process drops them from its
deny cache (the buckets may live on another Redis; every process has this one)."""
STATS_KEY_PREFIX = "fs:stats:"
RECONCILE_LOCK = "fs:reconcile:lock"
"""Held by the one worker reconciling the stock gates."""
STRANDED_LOCK = "fs:stranded:lock"
"""Held by the one worker sweeping for lost jobs."""


def gate_key(product_id: int) -> str:
    """The stock gate: units not yet promised."""
    return f"fs:{{p:{product_id}}}:stock"


def sale_key(product_id: int) -> str:
    """The product's sale rules: opens_ms, closes_ms, per_customer."""
    return f"fs:{{p:{product_id}}}:sale"


def pending_key(product_id: int) -> str:
    """The product's admitted orders, as JSON job arguments, for workers to claim in batches."""
    return f"fs:{{p:{product_id}}}:pending"


def purchases_key(product_id: int, customer_digest: str) -> str:
    """Units one customer was admitted for (the per-customer limit)."""
    return f"fs:{{p:{product_id}}}:bought:{customer_digest}"


def idempotency_record_key(customer_key_digest: str) -> str:
    """An Idempotency-Key's record: the first request's fingerprint and order id."""
    return f"fs:idem:{{{customer_key_digest}}}"


def stats_key(second: int) -> str:
    """``POST /buy`` outcomes of one unix second, summed over every API process."""
    return f"{STATS_KEY_PREFIX}{second}"


# The limiter's Redis (the main one unless configured apart; may be a Redis Cluster)


def client_bucket_key(route: str, identity: str, limit: str) -> str:
    """A bucket whose policy counts one identity in every limit: the tag holds the identity, so
    the buckets of different clients spread over a cluster."""
    return f"fs:rl:{{{route}:{identity}}}:{limit}"


def route_bucket_key(route: str, limit: str, identity: str) -> str:
    """A bucket of a policy mixing identities (say per-IP and global): one slot per route."""
    return f"fs:rl:{{{route}}}:{limit}:{identity}"


# RQ (its own key names; ours are the queue's name and the job ids)

ORDER_QUEUE = "orders"
_ORDER_JOB_PREFIX = "order-"


def order_job_id(order_id: str) -> str:
    """Deterministic: one job per order id, so a retry can never make a second one."""
    return f"{_ORDER_JOB_PREFIX}{order_id}"


def order_id_of_job(job_id: str) -> str:
    return job_id.removeprefix(_ORDER_JOB_PREFIX)


def job_key(order_id: str) -> str:
    """The order job's hash, as RQ names it."""
    return Job.key_for(order_job_id(order_id))
