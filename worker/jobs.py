"""RQ job bodies. Each worker process builds its engine and Redis client once, lazily."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from functools import cache
from typing import Any

from opentelemetry.trace import SpanKind
from redis import Redis
from rq import get_current_job
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from db.orders import AdmittedOrder, apply_orders, record_failure
from db.session import make_engine
from service.core.keys import ADMITTED_KEY, order_job_id, pending_key
from service.core.redis_clients import sync_redis
from service.core.settings import get_settings
from service.core.tracing import context_from, record, trace_engine, tracer
from service.sale.stock_gate import add_to_gate
from worker.metrics import JOB_RETRIES, observe_batch

log = logging.getLogger(__name__)
DECIDED_EARLIER = "decided_earlier"
"""A job's result when another job's batch had already decided its order (no database call)."""


@cache
def engine() -> Engine:
    """This worker process's engine (built on first use, never across a fork), traced."""
    built = make_engine(get_settings().database_url, pool_size=2)
    trace_engine(built)
    return built


def _attempt(job: Any) -> int | None:
    """1 for the first run, 2 for the first retry…: a retry is a new span in the same trace."""
    if job is None or job.retry_intervals is None or job.retries_left is None:
        return None
    return len(job.retry_intervals) - job.retries_left + 1


@cache
def _redis() -> Redis:
    return sync_redis(get_settings().redis_url)


def _admitted(
    order_id: str, product_id: int, quantity: int, client_id: str, admitted_at: str
) -> AdmittedOrder:
    return AdmittedOrder(
        uuid.UUID(order_id), product_id, quantity, client_id, datetime.fromisoformat(admitted_at)
    )


def apply_order_job(order_id: str, product_id: int, quantity: int, client_id: str, admitted_at: str) -> dict:
    """Confirm or reject one admitted order in PostgreSQL, exactly once, together with up to
    ``FLASHSALE_WORKER_BATCH_SIZE`` other orders of its product claimed from the pending list.

    Claimed orders keep their own jobs: if this worker dies before it commits, those jobs
    still apply them; if it commits, they find their orders gone from ``fs:admitted`` and
    return without touching PostgreSQL.
    """
    job = get_current_job()
    with tracer.start_as_current_span(
        "flashsale.apply_order", context=context_from(job.meta if job else None), kind=SpanKind.CONSUMER
    ) as span:
        order = _admitted(order_id, product_id, quantity, client_id, admitted_at)
        with _redis().pipeline(transaction=False) as pipe:
            pipe.lpop(pending_key(product_id), get_settings().worker_batch_size)
            pipe.zscore(ADMITTED_KEY, order_job_id(order_id))
            claimed, still_open = pipe.execute()
        # An order no longer in fs:admitted was decided by an earlier batch: its row is written.
        batch = {order.order_id: order} if still_open is not None else {}
        for payload in claimed or []:
            mate = _admitted(*json.loads(payload))
            batch.setdefault(mate.order_id, mate)
        outcome = None
        if batch:
            outcomes = apply_orders(engine(), list(batch.values()))
            observe_batch(batch, outcomes)
            outcome = outcomes.get(order.order_id)
            _redis().zrem(ADMITTED_KEY, *(order_job_id(str(decided)) for decided in batch))
        facts = {
            "order_id": order_id,
            "product_id": product_id,
            "status": outcome.status if outcome else DECIDED_EARLIER,
            "reason": outcome.reason if outcome else None,
            "conflicts": outcome.conflicts if outcome else 0,
            "applied_now": bool(outcome and outcome.applied_now),
        }
        attempt = _attempt(job)
        if attempt and attempt > 1:
            JOB_RETRIES.inc()
        record(span, **facts, quantity=quantity, batch_size=len(batch), attempt=attempt)
        log.info("order decided", extra=facts)  # inside the span: the line carries its trace id
    return {"status": facts["status"], "reason": facts["reason"]}


def order_job_failed(job: Any, connection: Redis, exc_type: Any, exc_value: Any, traceback: Any) -> None:
    """RQ failure callback: on the last failure, reject the order as failed and give its units
    back, or, when PostgreSQL cannot take the rejection, leave the order undecided.

    RQ calls this on every failure, retried or not (also for jobs of workers that died), so it
    acts only once no retry is left. An order is reported terminal only once its row exists:
    without one it stays in ``fs:admitted`` (``queued`` to its buyer, its units held, counted
    by the reconciler) and its job waits in RQ's failed registry, a dead letter, until the
    stranded-order sweep or ``flashsale orders requeue`` runs it again (worker/dead_letters.py).
    """
    if job.retries_left:
        return
    order = _admitted(*job.args)
    facts = {"order_id": str(order.order_id), "error": repr(exc_value)}
    try:
        outcome = record_failure(engine(), order)
    except SQLAlchemyError as exc:
        log.error(
            "order job gave up; its order waits, undecided, for PostgreSQL",
            extra=facts | {"cause": repr(exc)},
        )
        return
    log.error("order job gave up", extra=facts | {"status": outcome.status, "reason": outcome.reason})
    observe_batch({order.order_id: order}, {order.order_id: outcome})
    # One step: the reconciler counts the units as held until the order leaves fs:admitted,
    # so they must be back in the gate by then, not a moment later.
    with _redis().pipeline(transaction=True) as pipe:
        pipe.zrem(ADMITTED_KEY, order_job_id(str(order.order_id)))
        if outcome.applied_now:
            add_to_gate(pipe, order.product_id, order.quantity)
        pipe.execute()
