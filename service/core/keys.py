"""Every Redis key and channel name flashsale writes, and the RQ names it computes: built here only.

``tests/test_layout.py`` fails on an ``fs:`` literal anywhere else in the product. Keys of one
product share the hash tag ``{p:<id>}`` and a bucket's keys share one too, so every Lua call
touches one Redis Cluster slot. ``lua/README.md`` lists which keys each script is given.
"""

from __future__ import annotations

from rq.job import Job

# The main Redis
ADMITTED_KEY = "fs:admitted"
"""Sorted set of the ids of orders admitted and not yet decided, scored by admission time (ms):
what ``GET /orders`` and ``GET /backlog`` read; an order leaves it in the step that takes its
entry off its product's pending list, after its row is committed (see worker/jobs.py)."""
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
    """The product's undecided orders, oldest first, one compact entry each
    (service/sale/order_jobs.py): the queue its draining job applies in batches."""
    return f"fs:{{p:{product_id}}}:pending"


def drain_flag_key(product_id: int) -> str:
    """The id of the one draining job of the product that is queued or running; absent when
    none is (admit.lua then queues one)."""
    return f"fs:{{p:{product_id}}}:drain"


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
_DRAIN_JOB_PREFIX = "drain-"


def drain_job_id(product_id: int, suffix: str) -> str:
    """A draining job of one product: ``drain-<product id>-<suffix>``, the suffix unique (the id
    of the order whose admission queued it, or a fresh one), so a job that has just finished
    (and is being deleted by RQ) is never confused with the next one."""
    return f"{_DRAIN_JOB_PREFIX}{product_id}-{suffix}"


def product_of_drain_job(job_id: str) -> int | None:
    """The product a draining job's id names; None for any other job id."""
    if not job_id.startswith(_DRAIN_JOB_PREFIX):
        return None
    product, _, _ = job_id.removeprefix(_DRAIN_JOB_PREFIX).partition("-")
    return int(product) if product.isdigit() else None


def drain_job_key(product_id: int, suffix: str) -> str:
    """A draining job's hash, as RQ names it."""
    return Job.key_for(drain_job_id(product_id, suffix))
