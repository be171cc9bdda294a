"""db/orders.py against PostgreSQL: optimistic locking, exactly-once order rows."""

import threading
import uuid
from datetime import UTC, datetime

from sqlalchemy import text

from db.models import OrderStatus, RejectReason
from db.orders import AdmittedOrder, apply_order, apply_orders, backoff_seconds, record_failure
from service.cli.dev_servers import wait_until
from tests.support.database import blocked_on_a_row_lock, order_rows, product_state


def _order(quantity=1, product_id=1):
    return AdmittedOrder(uuid.uuid4(), product_id, quantity, "203.0.113.7", datetime.now(UTC))


def test_a_confirmed_order_takes_stock_and_bumps_the_version(fresh_db):
    stock, version = product_state(fresh_db)
    outcome = apply_order(fresh_db, _order(quantity=3))
    assert (outcome.status, outcome.reason, outcome.applied_now) == (OrderStatus.CONFIRMED, None, True)
    assert product_state(fresh_db) == (stock - 3, version + 1)


def test_running_an_order_twice_applies_it_once(fresh_db):
    order = _order()
    apply_order(fresh_db, order)
    again = apply_order(fresh_db, order)
    assert again.status == OrderStatus.CONFIRMED and not again.applied_now
    assert product_state(fresh_db)[0] == 99
    assert len(order_rows(fresh_db)) == 1


def test_not_enough_stock_is_a_rejection_not_an_error(fresh_db):
    outcome = apply_order(fresh_db, _order(quantity=101))
    assert (outcome.status, outcome.reason) == (OrderStatus.REJECTED, RejectReason.SOLD_OUT)
    assert product_state(fresh_db)[0] == 100


def test_an_unknown_product_is_rejected(fresh_db):
    outcome = apply_order(fresh_db, _order(product_id=424242))
    assert (outcome.status, outcome.reason) == (OrderStatus.REJECTED, RejectReason.UNKNOWN_PRODUCT)


def _race(fresh_db, rival_sql: list[str], orders: list[AdmittedOrder]) -> tuple[dict, list[float]]:
    """apply_orders(orders) while a rival transaction, begun first, runs ``rival_sql``; the rival
    commits once the batch waits on one of its locks. Returns the outcomes and the backoffs slept."""
    rival = fresh_db.connect()
    rival_tx = rival.begin()
    for statement in rival_sql:
        rival.execute(text(statement))
    outcomes, slept = [], []
    buyer = threading.Thread(target=lambda: outcomes.append(apply_orders(fresh_db, orders, slept.append)))
    buyer.start()
    try:
        wait_until(lambda: blocked_on_a_row_lock(fresh_db), 10, "the batch waiting on the rival")
    finally:
        rival_tx.commit()
        rival.close()
    buyer.join(10)
    return outcomes[0], slept


def test_a_lost_race_is_retried_after_rereading(fresh_db):
    """Another writer commits a new version between our read and our update: re-read, retry, succeed."""
    stock, version = product_state(fresh_db)
    order = _order()
    outcomes, _ = _race(fresh_db, ["UPDATE products SET version = version + 1 WHERE id = 1"], [order])
    outcome = outcomes[order.order_id]
    assert outcome.status == OrderStatus.CONFIRMED
    assert outcome.conflicts == 1
    assert product_state(fresh_db) == (stock - 1, version + 2)


def test_concurrent_writers_on_one_row_never_lose_an_update(fresh_db):
    _, version_before = product_state(fresh_db)
    orders = [_order() for _ in range(80)]
    conflicts = []

    def run(chunk):
        for order in chunk:
            conflicts.append(apply_order(fresh_db, order).conflicts)

    threads = [threading.Thread(target=run, args=(orders[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert product_state(fresh_db) == (20, version_before + 80)
    rows = order_rows(fresh_db)
    assert len(rows) == 80 and all(status == OrderStatus.CONFIRMED for status, _, _ in rows.values())
    assert sum(conflicts) > 0, "eight threads on one row should have collided at least once"


def test_a_failed_order_is_recorded_once_and_never_overrides_a_decision(fresh_db):
    confirmed = _order()
    apply_order(fresh_db, confirmed)
    assert record_failure(fresh_db, confirmed).status == OrderStatus.CONFIRMED
    failed = _order()
    outcome = record_failure(fresh_db, failed)
    assert (outcome.status, outcome.reason, outcome.applied_now) == ("rejected", "failed", True)
    assert not record_failure(fresh_db, failed).applied_now


def test_backoff_is_jittered_and_capped():
    delays = [backoff_seconds(n) for n in range(1, 40)]
    assert all(0 <= d <= 0.05 for d in delays)
    assert len(set(delays)) > 1


def test_a_batch_is_served_first_come_first_served_with_one_version_bump(fresh_db):
    with fresh_db.begin() as connection:
        connection.execute(text("UPDATE products SET stock = 3 WHERE id = 1"))
    _, version = product_state(fresh_db)
    orders = [_order() for _ in range(5)]
    outcomes = apply_orders(fresh_db, list(reversed(orders)))  # arrival order, not list order, counts
    assert [outcomes[o.order_id].status for o in orders] == ["confirmed"] * 3 + ["rejected"] * 2
    assert {outcomes[o.order_id].reason for o in orders[3:]} == {"sold_out"}
    assert product_state(fresh_db) == (0, version + 1)


def test_a_batch_skips_what_is_already_decided(fresh_db):
    first, second = _order(), _order()
    apply_order(fresh_db, first)
    outcomes = apply_orders(fresh_db, [first, second])
    assert not outcomes[first.order_id].applied_now and outcomes[second.order_id].applied_now
    assert product_state(fresh_db)[0] == 98


def test_a_batch_keeps_its_rows_through_a_lost_race_and_skips_rows_another_run_wrote(fresh_db):
    """The rival decides one order of the batch and takes a unit: the batch's INSERT waits for
    it, skips that row, and its version-checked update loses once, is tried again with the new
    version, and wins, without starting over (no backoff)."""
    stock, version = product_state(fresh_db)
    taken, *mine = [_order() for _ in range(3)]
    rival_sql = [
        "INSERT INTO orders (id, product_id, client_id, quantity, status, admitted_at)"
        f" VALUES ('{taken.order_id}', 1, 'rival', 1, 'confirmed', now())",
        "UPDATE products SET stock = stock - 1, version = version + 1 WHERE id = 1",
    ]
    outcomes, slept = _race(fresh_db, rival_sql, [taken, *mine])
    assert not outcomes[taken.order_id].applied_now
    assert all(outcomes[o.order_id].applied_now and outcomes[o.order_id].status == "confirmed" for o in mine)
    assert outcomes[mine[0].order_id].conflicts == 1 and slept == []
    assert product_state(fresh_db) == (stock - 3, version + 2)
    assert len(order_rows(fresh_db)) == 3


def test_a_batch_whose_answers_the_rival_changed_decides_again(fresh_db):
    """Read with 3 units left, all three orders confirmed; the rival leaves 1 unit before the
    update: the rows are withdrawn and the batch decided again, first come first served."""
    with fresh_db.begin() as connection:
        connection.execute(text("UPDATE products SET stock = 3 WHERE id = 1"))
    orders = [_order() for _ in range(3)]
    rival_sql = ["UPDATE products SET stock = 1, version = version + 1 WHERE id = 1"]
    outcomes, slept = _race(fresh_db, rival_sql, orders)
    assert [outcomes[o.order_id].status for o in orders] == ["confirmed", "rejected", "rejected"]
    assert len(slept) == 1
    assert product_state(fresh_db)[0] == 0
    assert len(order_rows(fresh_db)) == 3
