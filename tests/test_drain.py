"""One draining job per lane (these tests use one lane): admissions racing the drain's end, a
stale run, a hand-off, and a sale's worth of admissions while drains end and start again (real
Redis and PostgreSQL, admitted through the production admit path)."""

import threading
import time

import pytest

from db.orders import apply_orders, record_failures
from service.core.keys import ADMITTED_KEY, drain_flag_key, gate_key, pending_key
from service.sale.order_jobs import order_queue, parse_entry, queue_drain
from service.sale.stock_gate import seed, set_gate
from tests.support.admitting import admit_orders
from tests.support.database import order_rows, product_state, status_counts
from worker import jobs
from worker.runner import OrderWorker

pytestmark = pytest.mark.drain_lanes(1)  # each test follows one drain


def _work(redis) -> None:
    queue = order_queue(redis)
    OrderWorker([queue], connection=redis, serializer=queue.serializer).work(burst=True)


def _flag(redis) -> str | None:
    flag = redis.get(drain_flag_key(1))
    return flag.decode() if flag is not None else None


def _commit_head(engine, redis, count: int) -> list[tuple[str, int]]:
    """What a drain does before it settles: read the head of the list, commit its rows; the
    settlement of the batch (each order's id, no units to give back: none failed)."""
    batch = [parse_entry(1, raw).order for raw in redis.lrange(pending_key(1), 0, count - 1)]
    apply_orders(engine, batch)
    return [(str(order.order_id), 0) for order in batch]


def _fail_head(engine, redis, count: int) -> list[tuple[str, int]]:
    """What a draining job that gave up does before it settles: its batch rejected as failed;
    the settlement gives each order's units back."""
    batch = [parse_entry(1, raw).order for raw in redis.lrange(pending_key(1), 0, count - 1)]
    record_failures(engine, batch)
    return [(str(order.order_id), order.quantity) for order in batch]


def test_an_order_admitted_before_the_drain_ends_is_seen_by_that_drain(settings, redis, fresh_db, worker_env):
    """The drain committed its batch; an admission comes before it settles: the settle step
    finds the list not empty, keeps the flag (no second job is queued), and the same job goes
    on to decide the newcomer."""
    worker_env()
    set_gate(redis, 1, 10)
    first = admit_orders(settings, 2)
    job_id = _flag(redis)
    batch = _commit_head(fresh_db, redis, 2)
    (late,) = admit_orders(settings, 1, first_client=2)
    assert order_queue(redis).get_job_ids() == [job_id], "the running drain's flag stood: no new job"

    assert jobs.settle(1, 0, job_id, batch) == (2, 1), "two settled, one left: the drain goes on"
    assert _flag(redis) == job_id
    _work(redis)
    assert set(order_rows(fresh_db)) == {*first, late}
    assert product_state(fresh_db)[0] == 97
    assert not redis.exists(pending_key(1), drain_flag_key(1)) and redis.zcard(ADMITTED_KEY) == 0


def test_an_order_admitted_after_the_drain_ended_queues_a_new_drain(settings, redis, fresh_db, worker_env):
    worker_env()
    set_gate(redis, 1, 10)
    admit_orders(settings, 1)
    job_id = _flag(redis)
    redis.lpop(order_queue(redis).key)  # the drain is running
    assert jobs.settle(1, 0, job_id, _commit_head(fresh_db, redis, 1)) == (1, 0), "the list is empty: ended"
    assert _flag(redis) is None

    (late,) = admit_orders(settings, 1, first_client=1)
    new = _flag(redis)
    assert new not in (None, job_id) and order_queue(redis).get_job_ids() == [new]
    _work(redis)
    assert late in order_rows(fresh_db) and not redis.exists(pending_key(1), drain_flag_key(1))


def test_a_job_the_flag_does_not_name_touches_nothing(settings, redis, fresh_db, worker_env):
    """A stale run (RQ retried a job that still ran, or a job handed off) neither takes entries
    off the list nor ends the drain: the owner finds its orders decided and settles them."""
    worker_env()
    set_gate(redis, 1, 10)
    order_ids = admit_orders(settings, 3)
    batch = _commit_head(fresh_db, redis, 3)
    assert jobs.settle(1, 0, "drain-1-stale", batch) == (-1, 3)
    assert redis.llen(pending_key(1)) == 3 and redis.zcard(ADMITTED_KEY) == 3 and _flag(redis)
    later = [(order_id, 0) for order_id in order_ids[1:]]
    assert jobs.settle(1, 0, _flag(redis), later) == (0, 3), "only the entries at the head, in order"

    stock_before, _ = product_state(fresh_db)
    _work(redis)
    assert product_state(fresh_db)[0] == stock_before, "decided once, counted once"
    assert status_counts(fresh_db) == {("confirmed", None): 3}
    assert not redis.exists(pending_key(1), drain_flag_key(1)) and redis.zcard(ADMITTED_KEY) == 0


def test_a_stopping_worker_hands_the_rest_of_the_drain_to_a_new_job(settings, redis, fresh_db, worker_env):
    worker_env(FLASHSALE_WORKER_BATCH_SIZE="4")
    set_gate(redis, 1, 100)
    order_ids = admit_orders(settings, 10)
    first = _flag(redis)
    jobs.STOPPING.set()
    try:
        queue = order_queue(redis)
        OrderWorker([queue], connection=redis, serializer=queue.serializer).work(burst=True, max_jobs=1)
    finally:
        jobs.STOPPING.clear()
    assert len(order_rows(fresh_db)) == 4, "the batch in hand, and no other"
    successor = _flag(redis)
    assert successor not in (None, first) and order_queue(redis).get_job_ids() == [successor]
    _work(redis)
    assert set(order_rows(fresh_db)) == set(order_ids)
    assert not redis.exists(pending_key(1), drain_flag_key(1))


def test_admissions_while_drains_end_and_start_again_lose_nothing(settings, redis, fresh_db, worker_env):
    """Buyers admit while in-process workers drain in batches of two, so drains keep ending
    (the list found empty) and starting (an admission finding no flag): every order is decided
    once, and nothing is left behind."""
    worker_env(FLASHSALE_WORKER_BATCH_SIZE="2")
    seed(fresh_db, redis, stock=1000)
    admitted: list[str] = []

    def buy() -> None:
        for chunk in range(40):
            admitted.extend(admit_orders(settings, 3, first_client=3 * chunk))
            time.sleep(0.05)

    drains = set()

    def watch() -> None:
        while buyers.is_alive():
            if (flag := _flag(redis)) is not None:
                drains.add(flag)

    buyers = threading.Thread(target=buy)
    buyers.start()
    watcher = threading.Thread(target=watch)
    watcher.start()
    while buyers.is_alive() or redis.llen(pending_key(1)):
        _work(redis)
    watcher.join()
    buyers.join()
    _work(redis)
    assert len(admitted) == 120 and set(order_rows(fresh_db)) == set(admitted)
    assert product_state(fresh_db)[0] == 880
    assert len(drains) > 1, "drains ended and new ones were queued meanwhile"
    assert not redis.exists(pending_key(1), drain_flag_key(1)) and redis.zcard(ADMITTED_KEY) == 0
    assert order_queue(redis).count == 0


def test_a_drain_whose_head_another_job_settled_meanwhile_reads_it_afresh(
    settings, redis, fresh_db, worker_env, monkeypatch
):
    """The drain reads each batch behind the one in hand before that one settles, with the
    last entry of the batch in hand. When the drain's lease lapsed mid-batch and another job
    took part of the head meanwhile, that entry is not where the batch left it: the drain reads
    the head afresh and ends with every order decided once and nothing pending. Reading on at
    the old offset, it would go round a batch it can never settle, or skip orders."""
    worker_env(FLASHSALE_WORKER_BATCH_SIZE="2")
    set_gate(redis, 1, 100)
    order_ids = admit_orders(settings, 8)
    applying = jobs.apply_orders
    calls = 0

    def stalled_on_the_second_batch(engine, orders):
        nonlocal calls
        calls += 1
        if calls == 2:
            deadline = time.monotonic() + 10
            while redis.llen(pending_key(1)) != 6:  # the first batch's settle, on the other thread
                assert time.monotonic() < deadline, "the first batch never settled"
                time.sleep(0.005)
            redis.delete(drain_flag_key(1))  # the lease lapsed; another job takes the product...
            assert jobs.settle(1, 0, "drain-1-other", []) == (0, 6)
            assert jobs.settle(1, 0, "drain-1-other", _commit_head(engine, redis, 1)) == (1, 5)
            redis.delete(drain_flag_key(1))  # ...and stalls in turn
        assert calls < 20, "the drain goes round a batch it can never settle"
        return applying(engine, orders)

    monkeypatch.setattr(jobs, "apply_orders", stalled_on_the_second_batch)
    stock_before, _ = product_state(fresh_db)
    _work(redis)
    assert set(order_rows(fresh_db)) == set(order_ids)
    assert product_state(fresh_db)[0] == stock_before - 8, "each order counted once"
    assert not redis.exists(pending_key(1), drain_flag_key(1)) and redis.zcard(ADMITTED_KEY) == 0


def test_the_lease_of_a_drain_whose_worker_died_lapses_and_the_next_order_queues_a_new_one(
    settings, redis, fresh_db, worker_env
):
    """A running drain holds its flag on a lease it renews at every batch; its worker killed,
    the lease lapses (at once here), the next admission queues a new drain, and RQ's later
    retry of the dead job applies nothing twice."""
    worker_env()
    set_gate(redis, 1, 10)
    first = admit_orders(settings, 2)
    dead = _flag(redis)
    redis.lpop(order_queue(redis).key)  # a worker took it...
    assert jobs.settle(1, 0, dead, []) == (0, 2), "...claimed the product on a lease..."
    assert 0 < redis.pttl(drain_flag_key(1)) <= 3_000
    _commit_head(fresh_db, redis, 1)  # ...committed a batch, and died before settling it
    redis.pexpire(drain_flag_key(1), 1)
    time.sleep(0.01)

    (late,) = admit_orders(settings, 1, first_client=2)
    successor = _flag(redis)
    assert successor not in (None, dead) and order_queue(redis).get_job_ids() == [successor]
    redis.rpush(order_queue(redis).key, dead)  # RQ's recovery retries the dead job later
    stock_before, _ = product_state(fresh_db)
    _work(redis)
    assert set(order_rows(fresh_db)) == {*first, late}
    assert product_state(fresh_db)[0] == stock_before - 2, "the committed batch counted once"
    assert not redis.exists(pending_key(1), drain_flag_key(1)) and redis.zcard(ADMITTED_KEY) == 0


def _gate(redis) -> int:
    return int(redis.get(gate_key(1)))


def _gave_up_and_stalled(settings, redis, fresh_db, orders: int) -> tuple[str, list[tuple[str, int]]]:
    """A draining job that gave up: it claimed the product, rejected its batch as failed, and
    stalled past its lease before settling. Its id and the settlement it will send late."""
    admit_orders(settings, orders)
    gave_up = _flag(redis)
    redis.lpop(order_queue(redis).key)  # a worker took it
    assert jobs.settle(1, 0, gave_up, []) == (0, orders)
    settlement = _fail_head(fresh_db, redis, orders)
    redis.delete(drain_flag_key(1))  # the stall: its lease lapsed
    return gave_up, settlement


def test_failed_units_come_back_once_when_the_job_that_failed_them_settles_after_another(
    settings, redis, fresh_db, worker_env
):
    """Another drain finds the failed orders decided and settles them: their units come back
    with their entries, there; the first job's late settle gives back nothing (it once gave them
    a second time: a gate above the stock, over-admission)."""
    worker_env()
    set_gate(redis, 1, 10)
    gave_up, settlement = _gave_up_and_stalled(settings, redis, fresh_db, 2)
    queue_drain(redis, 1, 0, settings.job_timeout_seconds, settings.job_retry_backoff_seconds, None)
    _work(redis)
    assert _gate(redis) == 10, "the failed orders' units back in the gate"
    assert product_state(fresh_db)[0] == 100, "the failed orders took no stock"
    assert jobs.settle(1, 0, gave_up, settlement) == (0, 0)
    assert _gate(redis) == 10, "given back once"


def test_failed_units_are_not_lost_when_a_new_drain_owns_the_product_before_the_late_settle(
    settings, redis, fresh_db, worker_env
):
    """A buyer's admission queues a new drain before the job that failed two orders settles:
    the new drain settles them and gives their units back; the late settle is refused (it
    once dropped its give-back there: units never sold)."""
    worker_env()
    set_gate(redis, 1, 10)
    gave_up, settlement = _gave_up_and_stalled(settings, redis, fresh_db, 2)
    admit_orders(settings, 1, first_client=2)
    owner = _flag(redis)
    assert owner not in (None, gave_up)
    assert jobs.settle(1, 0, gave_up, settlement) == (-1, 3), "not its product any more"
    _work(redis)
    assert status_counts(fresh_db) == {("rejected", "failed"): 2, ("confirmed", None): 1}
    assert _gate(redis) == 9, "ten, less the three admitted, plus the two failed"
    assert product_state(fresh_db)[0] == 99
