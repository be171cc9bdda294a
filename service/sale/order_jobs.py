"""The ``orders`` queue: a product's pending orders and the draining jobs that apply them,
written by the API (admit.lua) and read by the workers (``worker.jobs``); both import their
format from here, neither from the other.

An admitted order is one compact entry on one of its product's pending lists, its lane
(``fs:{p:<id>}:pending`` for lane 0, ``…:pending:<lane>`` for the others, the lane drawn from
the order id among FLASHSALE_DRAIN_LANES): ``<order id> <quantity> <admitted µs> <client
id>[ <traceparent>]``. RQ holds one job per lane with orders waiting, not one per order: the
draining job (``drain-<product id>[_<lane>]-<suffix>``, named by the lane's flag
``fs:{p:<id>}:drain[:<lane>]``) that applies the list in batches until it is empty; the lanes
of a hot product drain side by side on as many workers. A finished draining job leaves nothing
in Redis (``result_ttl`` 0); a decided order leaves nothing either (its row is the record).
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis import Redis
from redis.exceptions import WatchError
from rq import Callback, Queue, Retry
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from db.orders import AdmittedOrder
from service.core.auto_pipeline import PackedArgs
from service.core.keys import ORDER_QUEUE, drain_flag_key, drain_job_id

JOB_FUNCTION = "worker.jobs.drain_orders"
RESULT_TTL_SECONDS = 0
"""A finished draining job is deleted at once: the order rows in PostgreSQL are the record."""
FAILURE_TTL_SECONDS = 7 * 24 * 3600
"""A draining job that gave up stays in RQ's failed registry (the dead-letter queue) this long."""
DRAIN_LEASE_MS = 1_500
"""A running drain holds its lane's flag on this lease, renewed every third of it by a
thread of its worker process (and at every batch): the flag of a drain whose worker died
lapses this soon, and the next admission, or the next stranded-order sweep, queues a new
draining job (RQ's own recovery of the dead job takes the job timeout + 5 s)."""


def jittered_backoff(waits: Sequence[int]) -> list[int]:
    """The retry waits, each drawn from 50-150 % of itself (a 0 stays 0), so the draining jobs
    that failed together when PostgreSQL went away do not all come back in the same second."""
    return [round(wait * random.uniform(0.5, 1.5)) for wait in waits]


JITTER_DRAWS = 256
"""Retry schedules drawn once per process; each draining job takes one of them at random."""


def job_options(retry_backoff: Sequence[int]) -> dict:
    """RQ's options of a draining job; ``retry_backoff`` is FLASHSALE_JOB_RETRY_BACKOFF_SECONDS.

    Infrastructure errors (PostgreSQL down) are retried once per wait (by default for about
    two minutes) before the failure callback decides the batch in hand; sold out and
    optimistic-lock conflicts never raise. The default's first retry is immediate, so a job
    abandoned by a dead worker is requeued by any worker's maintenance sweep without waiting
    for RQ's scheduler (whose lock may have died with it)."""
    return {
        "result_ttl": RESULT_TTL_SECONDS,
        "failure_ttl": FAILURE_TTL_SECONDS,
        "ttl": None,  # a queued drain must never expire unseen
        "retry": Retry(max=len(retry_backoff), interval=list(retry_backoff)),
        "on_failure": Callback("worker.jobs.drain_failed"),
    }


def order_queue(connection: Redis) -> Queue:
    return Queue(ORDER_QUEUE, connection=connection, serializer=JSONSerializer)


def count_queue(pipe, queue: Queue) -> None:
    """Queue on ``pipe`` (sync or asyncio) two replies: jobs waiting, and jobs running now.
    Started entries are scored by when they expire, so a dead worker's do not count."""
    pipe.llen(queue.key)
    pipe.zcount(StartedJobRegistry(queue=queue).key, time.time(), "+inf")


# The pending list's entries

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PendingOrder:
    """One entry of a lane's pending list: the order and the trace its admission began."""

    order: AdmittedOrder
    traceparent: str | None = None


def order_entry(order: AdmittedOrder, traceparent: str | None = None) -> str:
    """The order as its pending entry (the product is the list's): ids, quantity, admission
    time in µs, the client, and the W3C ``traceparent`` when the admission was traced."""
    micros = (order.admitted_at - _EPOCH) // timedelta(microseconds=1)
    entry = f"{order.order_id} {order.quantity} {micros} {order.client_id}"
    return f"{entry} {traceparent}" if traceparent else entry


def parse_entry(product_id: int, raw: bytes | str) -> PendingOrder:
    text = raw.decode() if isinstance(raw, bytes) else raw
    order_id, quantity, micros, client_id, *trace = text.split(" ")
    admitted_at = _EPOCH + timedelta(microseconds=int(micros))
    order = AdmittedOrder(order_id, product_id, int(quantity), client_id, admitted_at)
    return PendingOrder(order, trace[0] if trace else None)


def entry_order_id(raw: bytes) -> str:
    """An entry's order id, without parsing the rest."""
    return raw[:36].decode()


def entry_admitted_seconds(raw: bytes) -> float:
    """When an entry's order was admitted (seconds since the epoch)."""
    return int(raw.split(b" ", 3)[2]) / 1_000_000


# The draining job


def lane_of(order_id: str, lanes: int) -> int:
    """The lane an order waits in: its (random) id spreads a product's orders evenly."""
    return int(order_id[:8], 16) % lanes


def drain_args(product_id: int, lane: int) -> list[int]:
    """A draining job's arguments: lane 0's are those of the jobs from before lanes existed."""
    return [product_id, lane] if lane else [product_id]


def _description(product_id: int, lane: int = 0) -> str:
    return f"drain product {product_id}" + (f" lane {lane}" if lane else "")


class DrainJobFields:
    """A draining job's hash in RQ's own format, for lua/admit.lua to write when it finds no
    draining job for the product.

    Built once from a job RQ creates itself, so every constant field (callbacks, retries,
    TTLs, origin, timeout, status) is what RQ's own enqueue would store; per job only the
    call data (the product), the timestamps, the description and the drawn retry waits
    change. ``tests/test_admission.py`` runs such jobs on RQ's own worker and compares them
    with RQ's own, so an RQ upgrade that changes the format fails there.
    """

    PER_JOB = ("data", "created_at", "enqueued_at", "description", "retry_intervals", "meta")

    def __init__(self, queue: Queue, job_timeout: int, retry_backoff: Sequence[int]) -> None:
        template = queue.create_job(JOB_FUNCTION, args=[], timeout=job_timeout, **job_options(retry_backoff))
        template.origin = queue.name
        template.enqueued_at = datetime.now(UTC)
        template._status = JobStatus.QUEUED  # what Queue.enqueue sets before saving
        fields = template.to_dict()
        # As RQ's own unique-enqueue script is fed: text values as they are, others as str().
        self.constant = PackedArgs.of(
            [
                x if isinstance(x, str | bytes) else str(x)
                for k, v in fields.items()
                if k not in self.PER_JOB and v is not None
                for x in (k, v)
            ]
        )
        """The fields every draining job shares, encoded once: the call appends them as they are."""
        self._serializer = queue.serializer
        self._data: dict[tuple[int, int], bytes] = {}
        self._retry_intervals = [json.dumps(jittered_backoff(retry_backoff)) for _ in range(JITTER_DRAWS)]

    def for_lane(self, product_id: int, lane: int, at: datetime) -> list[str | bytes]:
        """The fields of a draining job of the product's lane queued ``at`` but the ``constant`` ones."""
        data = self._data.get((product_id, lane))
        if data is None:
            call = (JOB_FUNCTION, None, drain_args(product_id, lane), {})
            data = self._data[(product_id, lane)] = self._serializer.dumps(call)
        # What rq.utils.utcformat writes, without its strftime.
        stamp = at.isoformat(timespec="microseconds").replace("+00:00", "Z")
        return [
            "data",
            data,
            "created_at",
            stamp,
            "enqueued_at",
            stamp,
            "description",
            _description(product_id, lane),
            "retry_intervals",
            random.choice(self._retry_intervals),
        ]


def queue_drain(
    redis: Redis,
    product_id: int,
    lane: int,
    job_timeout: int,
    retry_backoff: Sequence[int],
    replacing: str | None,
) -> str | None:
    """Queue a new draining job of the product's lane through RQ's own enqueue and name it in
    the lane's flag, in one transaction, provided the flag still names ``replacing`` (None: no
    job). Returns the new job's id, or None when the flag had moved on (another drain owns
    the lane: nothing is queued)."""
    flag = drain_flag_key(product_id, lane)
    job_id = drain_job_id(product_id, uuid.uuid4().hex, lane)
    queue = order_queue(redis)
    with redis.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(flag)
            current = pipe.get(flag)
            if (current.decode() if current is not None else None) != replacing:
                return None
            pipe.multi()
            queue.enqueue_call(
                JOB_FUNCTION,
                args=drain_args(product_id, lane),
                job_id=job_id,
                timeout=job_timeout,
                description=_description(product_id, lane),
                pipeline=pipe,
                **job_options(jittered_backoff(retry_backoff)),
            )
            pipe.set(flag, job_id)
            pipe.execute()
        except WatchError:
            return None
    return job_id
