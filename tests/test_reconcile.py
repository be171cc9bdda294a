"""The reconciler puts each gate at database stock minus the units admitted orders hold, never above it."""

import asyncio
import itertools
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from sqlalchemy import text

from db.orders import AdmittedOrder, apply_order, record_failure
from service.cli.dev_servers import wait_until
from service.core.keys import ADMITTED_KEY, gate_key, pending_key
from service.limiter.identity import ClientIdentity
from service.sale.admission import Decision, admit
from service.sale.order_jobs import FAILURE_TTL_SECONDS, order_queue
from service.sale.reconcile import reconcile
from service.sale.resources import close_resources, open_resources
from service.sale.stock_gate import seed
from tests.support.admitting import admit_orders, try_to_admit
from tests.support.cli import run_cli
from tests.support.database import product_state, status_counts
from tests.support.enqueue import record_orders
from tests.support.invariants import assert_invariants
from tests.support.lanes import drains


def _queue_orders(redis, count, quantity, lane=0):
    orders = [
        AdmittedOrder(uuid.uuid4(), 1, quantity, "203.0.113.7", datetime.now(UTC)) for _ in range(count)
    ]
    record_orders(redis, orders, lane)
    return orders


def _gate(redis) -> int:
    return int(redis.get(gate_key(1)))


@pytest.mark.parametrize("lane", [0, 15], ids=["lane 0", "the last lane"])
@pytest.mark.parametrize("drifted", [1000, 0, None])
def test_a_drifted_or_lost_gate_is_set_to_stock_minus_undecided_orders(redis, fresh_db, drifted, lane):
    _queue_orders(redis, 3, quantity=2, lane=lane)  # 6 units promised, not yet in the database
    if drifted is None:
        redis.delete(gate_key(1))
    else:
        redis.set(gate_key(1), drifted)
    (repair,) = reconcile(redis, fresh_db)
    assert (repair.product_id, repair.gate_before, repair.gate_after) == (1, drifted, 94)
    assert _gate(redis) == 94
    assert reconcile(redis, fresh_db) == [], "nothing left to repair"


def test_a_buyer_who_finds_the_gate_gone_rebuilds_it_without_the_units_orders_hold(
    system, settings, redis, fresh_db
):
    """The API rebuilds a missing gate (a Redis key lost): at stock minus what undecided orders
    hold, not at the database's stock, which would promise their units twice."""
    with fresh_db.begin() as connection:
        connection.execute(text("UPDATE products SET stock = 3 WHERE id = 1"))
    redis.set(gate_key(1), 3)
    admit_orders(settings, 3)  # no worker: all three undecided
    redis.delete(gate_key(1))
    system.start_apis(1)
    fourth = httpx.post(f"{system.url}/buy", json={"product_id": 1}, timeout=10)
    assert fourth.status_code == 409, f"a fourth yes for three units: {fourth.status_code} {fourth.text}"
    assert _gate(redis) == 0


def test_orders_already_in_the_database_are_not_counted_twice(redis, fresh_db):
    orders = _queue_orders(redis, 4, quantity=1)
    apply_order(fresh_db, orders[0])  # confirmed, though it is still in fs:admitted
    redis.set(gate_key(1), 50)
    reconcile(redis, fresh_db)
    assert _gate(redis) == 99 - 3


def _place(redis, job_id: str, state: str) -> None:
    """Move the product's draining job from the queue to where RQ keeps it in ``state``."""
    if state == "queued":
        return
    queue = order_queue(redis)
    job = Job.fetch(job_id, connection=redis, serializer=queue.serializer)
    with redis.pipeline() as pipe:
        pipe.lrem(queue.key, 1, job_id)
        if state == "intermediate":  # RQ's dequeue moved it there; the worker died before starting it
            pipe.rpush(queue.intermediate_queue_key, job_id)
        elif state == "started":
            job.set_status(JobStatus.STARTED, pipeline=pipe)
            pipe.zadd(
                StartedJobRegistry(queue=queue).key,
                {f"{job_id}:an-execution": datetime.now().timestamp() + 60},
            )
        elif state == "scheduled":  # a failed attempt waiting for its retry
            job.set_status(JobStatus.SCHEDULED, pipeline=pipe)
            ScheduledJobRegistry(queue=queue).schedule(
                job, datetime.now(UTC) + timedelta(minutes=1), pipeline=pipe
            )
        elif state == "failed":  # dead-lettered: every retry failed, no row could be written
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            FailedJobRegistry(queue=queue).add(
                job, FAILURE_TTL_SECONDS, "OperationalError: gone", pipeline=pipe
            )
        # "in no list": popped under a Redis restart, or by a worker killed before RQ's intermediate list
        pipe.execute()


@pytest.mark.parametrize("state", ["queued", "intermediate", "started", "scheduled", "failed", "in no list"])
def test_an_admitted_order_holds_its_units_wherever_rq_keeps_its_drain(settings, redis, fresh_db, state):
    """The reproduction of issue 15: stock 3, three orders admitted, their draining jobs moved on
    by RQ; the reconciler must not hand their units out again. (Draining jobs have no
    dependencies, so RQ's deferred registry never holds one.)"""
    seed(fresh_db, redis, stock=3)
    admit_orders(settings, 3)
    assert _gate(redis) == 0
    for job_id in drains(redis).values():  # one per lane its orders were spread over
        _place(redis, job_id, state)

    assert reconcile(redis, fresh_db) == []
    assert _gate(redis) == 0
    (fourth,) = try_to_admit(settings, 1, first_client=3)
    assert fourth.decision is Decision.NOT_ENOUGH_STOCK, "a fourth yes for three units"


def test_a_failed_orders_units_stay_counted_until_they_are_back_in_the_gate(settings, redis, fresh_db):
    """The failure callback writes "rejected failed", then gives the units back to the gate in
    the step that takes the order off its pending list and fs:admitted: in between, the units
    are in neither."""
    seed(fresh_db, redis, stock=3)
    first, *_ = admit_orders(settings, 3)
    record_failure(fresh_db, AdmittedOrder(uuid.UUID(first), 1, 1, "10.2.0.0", datetime.now(UTC)))
    assert reconcile(redis, fresh_db) == []
    assert _gate(redis) == 0


def test_a_gate_is_not_raised_while_an_admitted_orders_entry_is_gone(settings, redis, fresh_db):
    """Its product and units are unknown: raising any gate could hand them out again."""
    seed(fresh_db, redis, stock=3)
    admit_orders(settings, 3)
    (lane, *_) = drains(redis)
    redis.lpop(pending_key(1, lane))
    assert reconcile(redis, fresh_db) == [] and _gate(redis) == 0
    redis.set(gate_key(1), 5)
    (repair,) = reconcile(redis, fresh_db)
    assert (repair.gate_before, repair.gate_after) == (5, 1), "lowering is still safe"


def test_flashsale_reconcile_reports_its_repairs(redis, fresh_db, settings_env):
    redis.set(gate_key(1), 7)
    result = run_cli(settings_env, "reconcile")
    assert result.returncode == 0
    assert "product 1: gate 7 -> 100" in result.stdout and "1 gate(s) repaired" in result.stderr


@pytest.mark.slow
def test_workers_reconcile_on_their_own(system, fresh_db, redis):
    system.env["FLASHSALE_RECONCILE_INTERVAL_SECONDS"] = "1"
    system.start_workers(2)
    redis.set(gate_key(1), 12345)
    wait_until(lambda: redis.get(gate_key(1)) == b"100", 20, "a worker to repair the gate", interval=0.2)


RACE_STOCK = 600


def _buy_until(settings, stop: threading.Event, admitted: list[str], buyers: int = 4) -> None:
    """Buyers of one unit each, ``buyers`` at a time, each a new client, until ``stop``."""

    async def run() -> None:
        resources = open_resources(settings)
        numbers = itertools.count()

        async def buyer() -> None:
            while not stop.is_set():
                n = next(numbers)
                client = ClientIdentity(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", None, {}, "x-api-key")
                admission = await admit(resources, client, None, 1, 1, None)
                if admission.decision is Decision.ADMITTED:
                    admitted.append(admission.order_id)
                else:  # told sold out, a buyer tries again a little later
                    await asyncio.sleep(0.01)

        try:
            await asyncio.gather(*(buyer() for _ in range(buyers)))
        finally:
            await close_resources(resources)

    asyncio.run(run())


def _reconcile_until(redis, engine, stop: threading.Event) -> Counter:
    """Reconcile pass after pass until ``stop``, each one after losing a unit from the gate (as
    a Redis that forgot a write would), so that each has to raise the gate again: where erring
    high would show. Returns how many passes raised it while orders were still undecided."""
    passes = Counter()
    while not stop.is_set():
        in_flight = redis.zcard(ADMITTED_KEY) > 0
        redis.decr(gate_key(1))
        for repair in reconcile(redis, engine):
            passes["raised in flight"] += in_flight and repair.gate_after > (repair.gate_before or 0)
    return passes


def _offered_beyond_the_truth(redis, engine) -> int:
    """Gate + units of admitted, undecided orders - database stock: above 0, the gate offers
    units the database cannot confirm. The stock is read first, then the rows, then Redis in one
    MULTI, so an order decided meanwhile only makes the figure smaller (it cannot raise a false alarm)."""
    with engine.connect() as connection:
        stock = connection.execute(text("SELECT stock FROM products WHERE id = 1")).scalar_one()
        decided = {str(order_id) for order_id in connection.execute(text("SELECT id FROM orders")).scalars()}
    with redis.pipeline(transaction=True) as pipe:
        pipe.get(gate_key(1))
        pipe.zrange(ADMITTED_KEY, 0, -1)
        gate, admitted = pipe.execute()
    undecided = {order_id.decode() for order_id in admitted} - decided
    return int(gate) + len(undecided) - stock  # every order here buys one unit


def _watch_the_gate(redis, engine, stop: threading.Event) -> list[int]:
    """Sample the gate against the truth until ``stop``; returns every sample."""
    samples = []
    while not stop.is_set():
        samples.append(_offered_beyond_the_truth(redis, engine))
    return samples


@pytest.mark.slow
def test_reconciling_while_orders_are_admitted_and_popped_never_offers_more_than_the_truth(
    system, settings, redis, fresh_db
):
    """Real concurrency: buyers admitting through admit.lua, two `flashsale worker` processes
    draining in batches of one (drains ending and starting again), a reconciler passing again
    and again, and a watcher checking that the gate never exceeds stock - confirmed - undecided."""
    seed(fresh_db, redis, stock=RACE_STOCK)
    system.env["FLASHSALE_WORKER_BATCH_SIZE"] = "1"
    system.env["FLASHSALE_RECONCILE_INTERVAL_SECONDS"] = "3600"  # only this test's reconciler
    system.start_workers(2)
    stop, admitted = threading.Event(), []
    with ThreadPoolExecutor(3) as pool:
        buying = pool.submit(_buy_until, settings, stop, admitted)
        reconciling = pool.submit(_reconcile_until, redis, fresh_db, stop)
        watching = pool.submit(_watch_the_gate, redis, fresh_db, stop)
        try:
            wait_until(
                lambda: product_state(fresh_db)[0] == 0 and redis.zcard(ADMITTED_KEY) == 0,
                120,
                "every unit sold and every order decided",
                interval=0.2,
            )
        finally:
            stop.set()
        buying.result(), (passes := reconciling.result()), (samples := watching.result())

    assert max(samples) <= 0, f"the gate offered {max(samples)} units too many"
    assert len(samples) >= 100 and passes["raised in flight"] >= 20, (len(samples), passes)
    assert status_counts(fresh_db) == {("confirmed", None): RACE_STOCK}, "every yes kept"
    assert len(admitted) == RACE_STOCK
    assert_invariants(fresh_db, redis, admitted, RACE_STOCK)
