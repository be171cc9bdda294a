"""The ``orders`` queue: the order job's options and format, written by the API (admit.lua) and
read by the workers (``worker.jobs``); both import it from here, neither from the other."""

from __future__ import annotations

import contextlib
import json
import random
import time
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime

from redis import Redis
from rq import Callback, Queue, Retry
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from db.orders import AdmittedOrder
from service.core.auto_pipeline import PackedArgs
from service.core.keys import ORDER_QUEUE

JOB_FUNCTION = "worker.jobs.apply_order_job"
RESULT_TTL_SECONDS = 600
"""A finished job lingers this long; the order row in PostgreSQL is the lasting record."""
FAILURE_TTL_SECONDS = 7 * 24 * 3600
"""A job that gave up stays in RQ's failed registry (the dead-letter queue) this long."""


def jittered_backoff(waits: Sequence[int]) -> list[int]:
    """The retry waits, each drawn from 50-150 % of itself (a 0 stays 0), so the orders that
    failed together when PostgreSQL went away do not all come back in the same second."""
    return [round(wait * random.uniform(0.5, 1.5)) for wait in waits]


JITTER_DRAWS = 256
"""Retry schedules drawn once per process; each order job takes one of them at random."""


def job_options(retry_backoff: Sequence[int]) -> dict:
    """RQ's options of an order job; ``retry_backoff`` is FLASHSALE_JOB_RETRY_BACKOFF_SECONDS.

    Infrastructure errors (PostgreSQL down) are retried once per wait (by default for about
    two minutes) before the failure callback decides the order; sold out and optimistic-lock
    conflicts never raise. The default's first retry is immediate, so a job abandoned by a
    dead worker is requeued by any worker's maintenance sweep without waiting for RQ's
    scheduler (whose lock may have died with it)."""
    return {
        "result_ttl": RESULT_TTL_SECONDS,
        "failure_ttl": FAILURE_TTL_SECONDS,
        "ttl": None,  # a queued order must never expire unseen
        "retry": Retry(max=len(retry_backoff), interval=list(retry_backoff)),
        "on_failure": Callback("worker.jobs.order_job_failed"),
    }


def order_queue(connection: Redis) -> Queue:
    return Queue(ORDER_QUEUE, connection=connection, serializer=JSONSerializer)


def count_queue(pipe, queue: Queue) -> None:
    """Queue on ``pipe`` (sync or asyncio) two replies: jobs waiting, and jobs running now.
    Started entries are scored by when they expire, so a dead worker's do not count."""
    pipe.llen(queue.key)
    pipe.zcount(StartedJobRegistry(queue=queue).key, time.time(), "+inf")


def job_arguments(order: AdmittedOrder) -> list:
    """JSON-safe job arguments (ids and numbers, never live objects)."""
    return [
        str(order.order_id),
        order.product_id,
        order.quantity,
        order.client_id,
        order.admitted_at.isoformat(),
    ]


def arguments_of(data: bytes) -> list:
    """An order job's arguments from the ``data`` field of its hash: JSON as admit.lua writes
    it, or zlib-compressed JSON as RQ's own save writes it (``rq.job.Job.restore`` reads both)
    — without restoring the whole job, which costs six times as much."""
    with contextlib.suppress(zlib.error):
        data = zlib.decompress(data)
    _, _, arguments, _ = JSONSerializer.loads(data)
    return arguments


def _description(order: AdmittedOrder) -> str:
    return f"order {order.order_id}"  # RQ logs this; keep client addresses out


class OrderJobFields:
    """An order job's hash in RQ's own format, for lua/admit.lua to write.

    Built once from a job RQ creates itself, so every constant field (callbacks, retries,
    TTLs, origin, timeout, status) is what RQ's own enqueue would store; per order only the
    call data, the timestamps and the description change. ``tests/test_admission.py`` runs
    such jobs on RQ's own worker and compares them with RQ's own, so an RQ upgrade that
    changes the format fails there.
    """

    PER_ORDER = ("data", "created_at", "enqueued_at", "description", "retry_intervals", "meta")

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
                if k not in self.PER_ORDER and v is not None
                for x in (k, v)
            ]
        )
        """The fields every order job shares, encoded once: the call appends them as they are."""
        self._serializer = queue.serializer
        self._retry_intervals = [json.dumps(jittered_backoff(retry_backoff)) for _ in range(JITTER_DRAWS)]

    def for_order(
        self, order: AdmittedOrder, arguments: list, trace: dict[str, str] | None = None
    ) -> list[str | bytes]:
        """The fields of this order's job but the ``constant`` ones; ``arguments`` are
        ``job_arguments(order)``, computed once by the caller; ``trace`` (W3C trace headers)
        becomes the job's meta, for the worker's span."""
        # What rq.utils.utcformat writes, without its strftime.
        stamp = order.admitted_at.isoformat(timespec="microseconds").replace("+00:00", "Z")
        data = self._serializer.dumps((JOB_FUNCTION, None, arguments, {}))
        per_order = {
            "data": data,
            "created_at": stamp,
            "enqueued_at": stamp,
            "description": _description(order),
            "retry_intervals": random.choice(self._retry_intervals),
        }
        if trace:
            per_order["meta"] = self._serializer.dumps(trace)
        return [item for pair in per_order.items() for item in pair]
