"""A product's orders split over lanes (FLASHSALE_DRAIN_LANES): the lanes of one hot product
drain side by side on several workers, exactly once, and a lane the setting no longer names
(it was lowered) is still swept, dead-lettered, requeued and drained."""

import uuid
from datetime import UTC, datetime

import pytest
from rq.registry import FailedJobRegistry, StartedJobRegistry
from sqlalchemy import text

from db.orders import AdmittedOrder
from service.cli.dev_servers import free_port, wait_until
from service.core.keys import ADMITTED_KEY, drain_job_id, drain_of_job
from service.sale.order_jobs import lane_of, order_queue, queue_drain
from service.sale.stock_gate import seed, set_gate
from tests.support.admitting import admit_orders
from tests.support.database import order_rows, product_state, status_counts
from tests.support.enqueue import record_orders
from tests.support.lanes import drains, pending_count
from worker import jobs
from worker.dead_letters import failed_orders, requeue_orders
from worker.runner import OrderWorker
from worker.stranded import requeue_stranded


def _work(redis) -> None:
    """One in-process worker runs every queued job (and its immediate retries), then stops."""
    queue = order_queue(redis)
    OrderWorker([queue], connection=redis, serializer=queue.serializer).work(burst=True)


def _record(redis, count: int, lane: int) -> list[str]:
    """``count`` orders of product 1 waiting in ``lane``, as admit.lua leaves them, with no job."""
    orders = [AdmittedOrder(uuid.uuid4(), 1, 1, f"10.9.0.{n}", datetime.now(UTC)) for n in range(count)]
    record_orders(redis, orders, lane)
    return [str(order.order_id) for order in orders]


def test_a_draining_jobs_id_names_its_product_and_lane():
    assert drain_job_id(7, "abc") == "drain-7-abc", "lane 0 keeps the names from before lanes"
    assert drain_job_id(7, "abc", 3) == "drain-7_3-abc"
    assert drain_of_job("drain-7-abc") == (7, 0) and drain_of_job("drain-7_3-a-b-c") == (7, 3)
    not_drains = ["drain-x-a", "other-7-a", "drain-7_0-a", "drain-07-a", "drain-7_16-a", "drain-²-a"]
    assert [drain_of_job(job_id) for job_id in not_drains] == [None] * len(not_drains)


@pytest.mark.slow
def test_two_workers_drain_the_lanes_of_one_hot_product_side_by_side(system, fresh_db, redis, settings):
    """Both workers hold a draining job of the same product at once (each stuck behind a rival's
    row lock on the product, after writing its rows), then every order is decided once and the
    stock counts each exactly once, though the lanes' version-checked updates collided."""
    seed(fresh_db, redis, stock=1000)
    stock_before, version_before = product_state(fresh_db)
    blocker = fresh_db.connect()
    blocker_tx = blocker.begin()
    blocker.execute(text("SELECT 1 FROM products WHERE id = 1 FOR UPDATE"))
    try:
        order_ids = admit_orders(settings, 200)
        assert len(drains(redis)) == settings.drain_lanes == 4, "every lane has orders and a job"
        system.start_workers(2)
        started = StartedJobRegistry(queue=order_queue(redis))

        def lanes_in_hand() -> set:
            return {drain_of_job(job_id) for job_id in started.get_job_ids(cleanup=False)}

        wait_until(lambda: len(lanes_in_hand()) == 2, 60, "two lanes of product 1 draining at once")
        assert {product for product, _ in lanes_in_hand()} == {1}
    finally:
        blocker_tx.rollback()
        blocker.close()

    wait_until(lambda: len(order_rows(fresh_db)) == 200, 60, "every order decided", interval=0.2)
    assert status_counts(fresh_db) == {("confirmed", None): 200}
    assert set(order_rows(fresh_db)) == set(order_ids)
    stock, version = product_state(fresh_db)
    assert stock == stock_before - 200, "each order counted once"
    assert version_before + 4 <= version < version_before + 200, "one update per batch, each lane's own"
    wait_until(lambda: not drains(redis), 30, "every lane's drain ended", interval=0.2)
    assert pending_count(redis) == 0 and redis.zcard(ADMITTED_KEY) == 0
    assert FailedJobRegistry(queue=order_queue(redis)).count == 0


@pytest.mark.drain_lanes(1)
def test_orders_in_a_lane_the_setting_no_longer_names_are_swept_and_decided(redis, fresh_db, worker_env):
    """FLASHSALE_DRAIN_LANES was lowered while lane 5 held orders whose job was lost: the sweep
    looks at every lane a product can have, queues lane 5 a job, and it decides them."""
    set_gate(redis, 1, 10)
    order_ids = _record(redis, 3, lane=5)
    (queued,) = requeue_stranded(redis, fresh_db, older_than_seconds=0)
    assert drain_of_job(queued) == (1, 5) and drains(redis) == {5: queued}

    worker_env()
    _work(redis)
    assert status_counts(fresh_db) == {("confirmed", None): 3} and set(order_rows(fresh_db)) == set(order_ids)
    assert not drains(redis) and pending_count(redis) == 0 and redis.zcard(ADMITTED_KEY) == 0


def test_a_dead_letter_of_another_lane_is_listed_requeued_and_decided(settings, redis, fresh_db, worker_env):
    """PostgreSQL away through every retry of lane 3's drain: its orders wait, listed as failed
    orders of their product; requeued once PostgreSQL is back, they are confirmed."""
    set_gate(redis, 1, 10)
    order_ids = _record(redis, 2, lane=3)
    job_id = queue_drain(redis, 1, 3, settings.job_timeout_seconds, (0,), None)
    worker_env(FLASHSALE_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    _work(redis)
    assert FailedJobRegistry(queue=order_queue(redis)).get_job_ids() == [job_id]
    letters = failed_orders(redis)
    assert {letter.order_id for letter in letters} == set(order_ids)
    assert {(letter.job_id, letter.product_id) for letter in letters} == {(job_id, 1)}
    assert order_rows(fresh_db) == {} and drains(redis) == {3: job_id}, "undecided, the lane still held"

    assert requeue_orders(redis) == 2
    worker_env()
    _work(redis)
    assert status_counts(fresh_db) == {("confirmed", None): 2} and set(order_rows(fresh_db)) == set(order_ids)
    assert failed_orders(redis) == [] and not drains(redis) and redis.zcard(ADMITTED_KEY) == 0


@pytest.mark.drain_lanes(2)
def test_one_worker_serves_busy_lanes_in_turn(settings, redis, fresh_db, worker_env, monkeypatch):
    """Fewer workers than busy lanes: a drain hands its lane on once its fair turn is over and
    another draining job waits, so one worker decides both lanes' orders in turn, not one lane's
    whole list first (with a turn of 0 s: after every batch of one)."""
    monkeypatch.setattr(jobs, "FAIR_TURN_SECONDS", 0)
    set_gate(redis, 1, 100)
    order_ids = admit_orders(settings, 30)
    assert set(drains(redis)) == {0, 1}
    worker_env(FLASHSALE_WORKER_BATCH_SIZE="1")
    _work(redis)

    with fresh_db.connect() as connection:
        decided = dict(connection.execute(text("SELECT CAST(id AS text), decided_at FROM orders")).all())
    assert set(decided) == set(order_ids)
    spans = [
        (min(times), max(times))
        for lane in (0, 1)
        if (times := [at for order_id, at in decided.items() if lane_of(order_id, 2) == lane])
    ]
    (_, first_ended), (second_begun, _) = sorted(spans)
    assert second_begun < first_ended, "the second lane began before the first had drained"
    assert not drains(redis) and pending_count(redis) == 0 and redis.zcard(ADMITTED_KEY) == 0
