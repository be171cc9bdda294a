"""RQ job bodies: the draining job of one lane of a product. Each worker process builds its
engine and Redis client once, lazily.

One job per lane with orders waiting (not one per order): it applies the lane's pending list
(``fs:{p:<id>}:pending[:<lane>]``) in batches of ``FLASHSALE_WORKER_BATCH_SIZE``, each under
the optimistic lock (``db.orders.apply_orders``: the lanes of one product commit side by side,
retrying only the product's version-checked update when another lane's commit came first),
and after each commit takes the batch off the list and off ``fs:admitted`` in one step
(``lua/settle.lua``), the step that also ends the drain when the list is empty. A batch is
read, not popped: a worker that dies before settling leaves its orders on the list, and the
job's retry (RQ's, once its started entry lapses) applies them again; order ids are primary
keys, so a batch applied twice counts its stock once.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import Any
from uuid import UUID

from opentelemetry.trace import Link, SpanKind, use_span
from redis import Redis
from redis.commands.core import Script
from redis.exceptions import RedisError, WatchError
from rq import get_current_job
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from db.models import OrderStatus, RejectReason
from db.orders import Outcome, apply_orders, record_failures
from db.session import make_engine
from service.core.keys import ADMITTED_KEY, GATE_CHANNEL, drain_flag_key, drain_of_job, gate_key, pending_key
from service.core.lua import load_scripts
from service.core.redis_clients import sync_redis
from service.core.settings import get_settings
from service.core.tracing import context_from, record, trace_engine, tracer, tracing_on
from service.sale.order_jobs import (
    DRAIN_LEASE_MS,
    PendingOrder,
    entry_order_id,
    order_queue,
    parse_entry,
    queue_drain,
)
from worker.metrics import JOB_RETRIES, observe_batch

log = logging.getLogger(__name__)
FAIR_TURN_SECONDS = 0.5
"""While other draining jobs wait in the queue, a drain hands its lane on to a new job after
this long (else after half its timeout): fewer workers than busy lanes serve them in turn, so
no lane waits for another's whole drain."""
STOPPING = threading.Event()
"""Set when this worker was asked to stop (SIGTERM): a drain finishes the batch in hand and
hands the rest of its lane's orders to a new draining job, for another worker."""


@cache
def engine() -> Engine:
    """This worker process's engine (built on first use, never across a fork), traced."""
    built = make_engine(get_settings().database_url, pool_size=2)
    trace_engine(built)
    return built


@cache
def _redis() -> Redis:
    return sync_redis(get_settings().redis_url)


@cache
def _settle_script() -> Script:
    return load_scripts(_redis(), get_settings().lua_dir).settle


def _attempt(job: Any) -> int | None:
    """1 for the first run, 2 for the first retry…: a retry is a new span in the same trace."""
    if job is None or job.retry_intervals is None or job.retries_left is None:
        return None
    return len(job.retry_intervals) - job.retries_left + 1


def _read_head(product_id: int, lane: int, count: int) -> list[PendingOrder]:
    """The first ``count`` entries of the lane's pending list, parsed."""
    head = _redis().lrange(pending_key(product_id, lane), 0, count - 1)
    return [parse_entry(product_id, raw) for raw in head]


def settle(product_id: int, lane: int, job_id: str, orders: list[tuple[str, int]]) -> tuple[int, int]:
    """lua/settle.lua, for ``orders`` as (id, units to give back if this call takes the order off
    the list): (orders taken off, or -1 when another job owns the lane; entries left, 0 when
    the drain ended). With no orders: claim the lane (or renew the lease)."""
    flag = drain_flag_key(product_id, lane)
    keys = [pending_key(product_id, lane), ADMITTED_KEY, flag, gate_key(product_id)]
    args = [job_id, DRAIN_LEASE_MS, *(part for order in orders for part in order)]
    settled, left, given_back = _settle_script()(keys=keys, args=args)
    if given_back:
        _redis().publish(GATE_CHANNEL, product_id)  # units came back: clear sold-out latches
    return int(settled), int(left)


def _settlement(batch: list[PendingOrder], outcomes: dict[UUID | str, Outcome]) -> list[tuple[str, int]]:
    """What settling ``batch`` gives back: the units of every order rejected as failed, decided
    by this run or an earlier one (a run whose settle never came): the entry's removal, done
    once by whichever job settles it, is what gives them back exactly once. An order without a
    decision is never taken off the list: the job fails, and its retry reads the batch again."""
    if undecided := [p.order.order_id for p in batch if p.order.order_id not in outcomes]:
        raise RuntimeError(f"{len(undecided)} orders of the batch have no decision, e.g. {undecided[0]}")
    return [
        (
            str(pending.order.order_id),
            pending.order.quantity if _rejected_as_failed(outcomes.get(pending.order.order_id)) else 0,
        )
        for pending in batch
    ]


def _rejected_as_failed(outcome: Outcome | None) -> bool:
    return outcome is not None and (outcome.status, outcome.reason) == (
        OrderStatus.REJECTED,
        RejectReason.FAILED,
    )


def _facts(pending: PendingOrder, outcome: Outcome | None) -> dict:
    return {
        "order_id": str(pending.order.order_id),
        "product_id": pending.order.product_id,
        "status": outcome.status if outcome else None,
        "reason": outcome.reason if outcome else None,
        "conflicts": outcome.conflicts if outcome else 0,
        "applied_now": bool(outcome and outcome.applied_now),
    }


def _decided(span, pending: PendingOrder, outcome: Outcome | None, batch_size: int, attempt) -> None:
    facts = _facts(pending, outcome)
    record(span, **facts, quantity=pending.order.quantity, batch_size=batch_size, attempt=attempt)
    if log.isEnabledFor(logging.INFO):
        log.info("order decided", extra=facts)  # inside the order's span: the line carries its trace id


def _apply_batch(batch: list[PendingOrder], attempt: int | None) -> dict:
    """Apply one batch; with tracing on, one ``flashsale.apply_order`` span per order, each in
    the trace its admission began. The batch's SQL runs under the first order's span; the
    others' spans cover the same time and link to it."""
    first = batch[0]
    with tracer.start_as_current_span(
        "flashsale.apply_order", context=context_from(_carrier(first)), kind=SpanKind.CONSUMER
    ) as span:
        began = time.time_ns()
        outcomes = apply_orders(engine(), [pending.order for pending in batch])
        if tracing_on():
            for pending in batch[1:]:
                mate = tracer.start_span(
                    "flashsale.apply_order",
                    context=context_from(_carrier(pending)),
                    kind=SpanKind.CONSUMER,
                    start_time=began,
                    links=[Link(span.get_span_context())],
                )
                with use_span(mate, end_on_exit=True):
                    _decided(mate, pending, outcomes.get(pending.order.order_id), len(batch), attempt)
        elif log.isEnabledFor(logging.INFO):
            for pending in batch[1:]:
                _decided(span, pending, outcomes.get(pending.order.order_id), len(batch), attempt)
        _decided(span, first, outcomes.get(first.order.order_id), len(batch), attempt)
    return outcomes


def _carrier(pending: PendingOrder) -> dict[str, str] | None:
    return {"traceparent": pending.traceparent} if pending.traceparent else None


def drain_orders(product_id: int, lane: int = 0) -> dict:
    """Apply the pending orders of the product's lane in batches until none is left (the drain
    ends in the step that finds the list empty), this job's turn is over (half its timeout, or
    FAIR_TURN_SECONDS while other draining jobs wait), or the worker is stopping; then the rest
    goes to a new draining job, at the back of the queue. Only the job
    the lane's flag names drains: another (a stale run) returns at once, touching nothing.
    (``lane`` defaults to 0: the jobs queued before lanes existed drain lane 0.)"""
    job = get_current_job()
    job_id = job.id if job else ""
    attempt = _attempt(job)
    if attempt and attempt > 1:
        JOB_RETRIES.inc()
    with _Lease(product_id, lane, job_id):
        return _drain(product_id, lane, job_id, attempt)


class _Lease:
    """While a drain runs, a thread of its worker process renews the lease on the lane's flag
    every third of it, however long a batch takes (a lock wait, a slow PostgreSQL): the flag
    lapses only when the process is gone."""

    def __init__(self, product_id: int, lane: int, job_id: str) -> None:
        self.product_id, self.lane, self.job_id = product_id, lane, job_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="drain-lease", daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._stop.wait(DRAIN_LEASE_MS / 3000):
            try:
                _hold_flag(_redis(), self.product_id, self.lane, self.job_id, DRAIN_LEASE_MS, claim=False)
            except RedisError as exc:  # the next turn, or the next batch's settle, renews it
                log.debug("lease not renewed", extra={"error": type(exc).__name__})


def _drain(product_id: int, lane: int, job_id: str, attempt: int | None) -> dict:
    """Batches in a pipeline over two threads: while PostgreSQL applies a batch (the main
    thread waits on its socket), a second thread settles the batch before it, counts its
    metrics, and reads and parses the batch behind it. Settles stay in order (one thread,
    first in first out), each after its batch's commit, and each batch is read after the
    settle before it, with one entry of overlap: the batch behind is used only if the list
    still holds the last order of the batch in hand just before it (another job may have
    taken part of the head while this one's lease had lapsed); else the head is read afresh."""
    settings = get_settings()
    size = settings.worker_batch_size
    began = time.monotonic()
    decided = batches = 0
    settled, left = settle(product_id, lane, job_id, [])  # claim the lane: its flag, on a lease
    if settled < 0 or left == 0:
        return {"decided": 0, "batches": 0, "ended": "not_owner" if settled < 0 else "empty"}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drain-settle") as side:
        upcoming = side.submit(_read_batch, product_id, lane, size)
        in_flight: Future | None = None  # the settle of the batch before the one in hand
        while True:
            batch = upcoming.result()
            if batch is None:  # the head moved under the read behind: read it afresh
                upcoming = side.submit(_read_batch, product_id, lane, size)
                continue
            if batch:
                upcoming = side.submit(_read_batch, product_id, lane, size, batch)
                outcomes = _apply_batch(batch, attempt)
                decided += sum(1 for outcome in outcomes.values() if outcome.applied_now)
                batches += 1
            if in_flight is not None:
                settled, left = in_flight.result()
                in_flight = None
            elif not batch:
                settled, left = settle(product_id, lane, job_id, [])  # renew the lease, or end the drain
            if settled < 0 or (not batch and left == 0):
                break  # another job owns the lane, or the list is empty and the drain ended
            if not batch:  # entries came after the last read
                upcoming = side.submit(_read_batch, product_id, lane, size)
                continue
            in_flight = side.submit(_settle_batch, product_id, lane, job_id, batch, outcomes)
            if STOPPING.is_set() or _turn_over(began, settings.job_timeout_seconds):
                settled, left = in_flight.result()
                if settled >= 0 and left > 0:
                    successor = queue_drain(
                        _redis(),
                        product_id,
                        lane,
                        settings.job_timeout_seconds,
                        settings.job_retry_backoff_seconds,
                        job_id,
                    )
                    return {
                        "decided": decided,
                        "batches": batches,
                        "ended": "handed_off",
                        "successor": successor,
                    }
                break
    return {"decided": decided, "batches": batches, "ended": "not_owner" if settled < 0 else "empty"}


def _turn_over(began: float, job_timeout: int) -> bool:
    """Whether the drain that began at ``began`` should hand its lane on: its time slice (half
    its timeout) is spent, or its fair turn is and another draining job waits for a worker."""
    ran = time.monotonic() - began
    if ran > job_timeout / 2:
        return True
    return ran > FAIR_TURN_SECONDS and _redis().llen(_queue_key()) > 0


@cache
def _queue_key() -> str:
    return order_queue(_redis()).key


def _read_batch(
    product_id: int, lane: int, size: int, behind: list[PendingOrder] | None = None
) -> list[PendingOrder] | None:
    """The first ``size`` entries of the lane, parsed; or the ``size`` behind the batch
    ``behind``, read with its last entry, as the list is once the settle before that batch has
    run: None when that entry is not where the batch left it (another job took part of the head)."""
    if behind is None:
        return _read_head(product_id, lane, size)
    last = len(behind) - 1
    raw = _redis().lrange(pending_key(product_id, lane), last, last + size)
    if not raw or entry_order_id(raw[0]) != str(behind[-1].order.order_id):
        return None
    return [parse_entry(product_id, entry) for entry in raw[1:]]


def _settle_batch(
    product_id: int, lane: int, job_id: str, batch: list[PendingOrder], outcomes: dict
) -> tuple[int, int]:
    """After the batch's commit: count it, then take it off the list (``settle``'s answer)."""
    observe_batch({p.order.order_id: p.order for p in batch}, outcomes)
    return settle(product_id, lane, job_id, _settlement(batch, outcomes))


def _hold_flag(
    redis: Redis, product_id: int, lane: int, job_id: str, lease_ms: int | None, claim: bool
) -> bool:
    """Hold the lane's flag for ``job_id`` for ``lease_ms`` (None: with no TTL) while it names
    that job, or names none and ``claim``; False when another job owns the lane."""
    flag = drain_flag_key(product_id, lane)
    with redis.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(flag)
            current = pipe.get(flag)
            if current != job_id.encode() and not (current is None and claim):
                return False
            pipe.multi()
            pipe.set(flag, job_id, px=lease_ms)
            pipe.execute()
        except WatchError:
            return False
    return True


def drain_failed(job: Any, connection: Redis, exc_type: Any, exc_value: Any, traceback: Any) -> None:
    """RQ failure callback: on the last failure, reject the batch in hand as failed, give its
    units back and hand the rest of its lane's orders to a new draining job; or, when
    PostgreSQL cannot take the rejections, leave every order undecided.

    RQ calls this on every failure, retried or not (also for jobs of workers that died), so it
    acts only once no retry is left. An order is reported terminal only once its row exists:
    without one it stays pending and in ``fs:admitted`` (``queued`` to its buyer, its units
    held, counted by the reconciler), and the job waits in RQ's failed registry, still named
    by its lane's flag, a dead letter, until the stranded-order sweep or ``flashsale
    orders requeue`` runs it again (worker/dead_letters.py).
    """
    product_id, lane = drain_of_job(job.id) or (*job.args, 0)[:2]
    if job.retries_left:
        # It waits for its retry in RQ's hands: it keeps the lane for one more lease, so that
        # a retry far off (5, 10, 30 s…) does not hold up the lane once PostgreSQL is back:
        # the flag lapses and the next admission queues a fresh draining job.
        _hold_flag(connection, product_id, lane, job.id, DRAIN_LEASE_MS, claim=False)
        return
    settings = get_settings()
    if not _hold_flag(connection, product_id, lane, job.id, DRAIN_LEASE_MS, claim=True):
        return  # another draining job owns the lane (and these orders)
    batch = _read_head(product_id, lane, settings.worker_batch_size)
    if not batch:
        settle(product_id, lane, job.id, [])  # nothing waits: the drain ends
        return
    facts = {"product_id": product_id, "lane": lane, "orders": len(batch), "error": repr(exc_value)}
    with _Lease(product_id, lane, job.id):  # however long PostgreSQL takes, the lane stays this job's
        try:
            outcomes = record_failures(engine(), [pending.order for pending in batch])
        except SQLAlchemyError as exc:
            _hold_flag(connection, product_id, lane, job.id, None, claim=True)  # a dead letter keeps the lane
            log.error(
                "draining job gave up; its orders wait, undecided, for PostgreSQL",
                extra=facts | {"cause": repr(exc)},
            )
            return
        log.error("draining job gave up; its batch is rejected as failed", extra=facts)
        observe_batch({p.order.order_id: p.order for p in batch}, outcomes)
        # One step: the reconciler counts the units as held until the orders leave the list, so
        # they come back with the entries, not a moment later (nor twice, nor never).
        settled, left = settle(product_id, lane, job.id, _settlement(batch, outcomes))
    if settled >= 0 and left > 0:
        queue_drain(
            connection,
            product_id,
            lane,
            settings.job_timeout_seconds,
            settings.job_retry_backoff_seconds,
            job.id,
        )
