"""A worker's own /metrics: decisions by status and reason, time from 202 to decision, queue."""

import httpx
import pytest
from sqlalchemy import text

from service.cli.dev_servers import free_port, wait_until
from tests.support.database import blocked_on_a_row_lock
from tests.support.orders import wait_all_terminal

pytestmark = pytest.mark.slow


def _samples(url: str) -> dict[str, float]:
    samples = {}
    for line in httpx.get(url, timeout=5).text.splitlines():
        if line.startswith("flashsale_"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_a_worker_counts_what_it_decided_and_how_long_orders_waited(system, fresh_db):
    # The database holds 2 units while the gate (100) admits 5: 2 confirmed, 3 rejected sold out.
    with fresh_db.begin() as connection:
        connection.execute(text("UPDATE products SET stock = 2 WHERE id = 1"))
    port = free_port()
    system.env["FLASHSALE_WORKER_METRICS_PORT"] = str(port)
    system.start_apis(1)
    system.start_workers(1)
    # A rival writer changes the product first and commits once the worker's version-checked
    # update waits behind it: that update loses exactly once, and the retry succeeds.
    rival = fresh_db.connect()
    rival_tx = rival.begin()
    rival.execute(text("UPDATE products SET version = version + 1 WHERE id = 1"))
    try:
        with httpx.Client(base_url=system.url, timeout=10) as client:
            order_ids = [client.post("/buy", json={}).json()["order_id"] for _ in range(5)]
        wait_until(lambda: blocked_on_a_row_lock(fresh_db), 30, "the worker's update waiting on the rival")
    finally:
        rival_tx.commit()
        rival.close()
    wait_all_terminal(system.url, order_ids, timeout=30)

    metrics = f"http://127.0.0.1:{port}/metrics"
    counted = {
        'flashsale_orders_decided_total{reason="",status="confirmed"}': 2,
        'flashsale_orders_decided_total{reason="sold_out",status="rejected"}': 3,
        "flashsale_order_decide_seconds_count": 5,
        "flashsale_order_lock_conflicts_total": 1,
        "flashsale_order_job_retries_total": 0,
    }
    count = "flashsale_order_decide_seconds_count"
    wait_until(lambda: _samples(metrics).get(count) == 5, 10, "five decisions counted")
    samples = _samples(metrics)
    assert {name: samples.get(name) for name in counted} == counted
    assert 0 < samples["flashsale_order_decide_seconds_sum"] < 30
    # The queue gauges are refreshed on the worker's maintenance turn; the queue is empty now.
    depth = 'flashsale_queue_depth{queue="orders"}'
    wait_until(lambda: _samples(metrics).get(depth) == 0, 10, "queue depth 0")
