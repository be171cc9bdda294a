"""Every Redis key and channel name flashsale writes, and the RQ names it computes: built here only.

``tests/test_layout.py`` fails on an ``fs:`` literal anywhere else in the product. Keys of one
product share the hash tag ``{p:<id>}`` and a bucket's keys share one too, so every Lua call
touches one Redis Cluster slot. ``lua/README.md`` lists which keys each script is given.
"""

from __future__ import annotations

import re

from rq.job import Job

# The main Redis
ADMITTED_KEY = "fs:admitted"
"""Sorted set of the ids of orders admitted and not yet decided, scored by admission time (ms):
what ``GET /orders`` and ``GET /backlog`` read; an order leaves it in the step that takes its
entry off its lane's pending list, after its row is committed (see worker/jobs.py)."""
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


MAX_DRAIN_LANES = 16
"""A product's undecided orders are split over lanes (FLASHSALE_DRAIN_LANES of them, at most
this many), each with its own pending list and draining job, so that several workers apply one
hot product side by side. The sweep, the reconciler and the dead-letter list look at every
possible lane, so lowering the setting strands no order."""


def _lane_suffix(lane: int) -> str:
    """Lane 0's keys are a product's keys from before lanes existed (an upgrade strands nothing)."""
    return f":{lane}" if lane else ""


def pending_key(product_id: int, lane: int = 0) -> str:
    """One lane of the product's undecided orders, oldest first, one compact entry each
    (service/sale/order_jobs.py): the queue the lane's draining job applies in batches."""
    return f"fs:{{p:{product_id}}}:pending{_lane_suffix(lane)}"


def drain_flag_key(product_id: int, lane: int = 0) -> str:
    """The id of the one draining job of the product's lane that is queued or running; absent
    when none is (admit.lua then queues one)."""
    return f"fs:{{p:{product_id}}}:drain{_lane_suffix(lane)}"


def pending_keys(product_id: int) -> list[str]:
    """The pending lists of every lane the product can have."""
    return [pending_key(product_id, lane) for lane in range(MAX_DRAIN_LANES)]


def drain_flag_keys(product_id: int) -> list[str]:
    """The draining flags of every lane the product can have."""
    return [drain_flag_key(product_id, lane) for lane in range(MAX_DRAIN_LANES)]


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


def drain_job_id(product_id: int, suffix: str, lane: int = 0) -> str:
    """A draining job of one product's lane: ``drain-<product id>-<suffix>`` for lane 0,
    ``drain-<product id>_<lane>-<suffix>`` for the others (RQ allows no dot); the suffix unique (the id of the
    order whose admission queued it, or a fresh one), so a job that has just finished (and is
    being deleted by RQ) is never confused with the next one."""
    lane_part = f"_{lane}" if lane else ""
    return f"{_DRAIN_JOB_PREFIX}{product_id}{lane_part}-{suffix}"


_DRAIN_JOB_ID = re.compile(r"drain-([1-9][0-9]*|0)(?:_([1-9][0-9]?))?-.+", re.ASCII)


def drain_of_job(job_id: str) -> tuple[int, int] | None:
    """The (product, lane) a draining job's id names, as ``drain_job_id`` writes it; None for
    any other job id."""
    match = _DRAIN_JOB_ID.fullmatch(job_id)
    if match is None or int(match[2] or 0) >= MAX_DRAIN_LANES:
        return None
    return int(match[1]), int(match[2] or 0)


def drain_job_key(product_id: int, suffix: str, lane: int = 0) -> str:
    """A draining job's hash, as RQ names it."""
    return Job.key_for(drain_job_id(product_id, suffix, lane))
