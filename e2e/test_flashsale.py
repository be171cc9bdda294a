"""The whole system from outside, through the ingress: the same tests on every target."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from e2e.buyers import PacedSale, addresses, one_client_address
from e2e.targets import Target
from service.cli.dev_servers import wait_until
from service.sale.backlog import Backlog
from tests.support.load import fire_concurrently
from tests.support.orders import wait_all_terminal

pytestmark = pytest.mark.slow


def product(target: Target) -> dict:
    return httpx.get(f"{target.base_url}/products/1", timeout=10).json()


def test_the_seed_demo_through_the_ingress_gives_five_202_then_five_429(target):
    assert target.api_replicas() >= 3, "the demo must cross several API replicas"
    target.seed(100)
    client_ip = one_client_address()
    with httpx.Client(base_url=target.base_url, timeout=10) as client:
        # The README's curl loop from one client; round robin sends it across the replicas.
        responses = [client.post("/buy", json={}, headers={"x-forwarded-for": client_ip}) for _ in range(10)]
    assert [r.status_code for r in responses] == [202] * 5 + [429] * 5
    assert all(int(r.headers["retry-after"]) >= 1 for r in responses[5:])
    assert all(r.headers["content-type"] == "application/problem+json" for r in responses[5:])

    order_ids = [r.json()["order_id"] for r in responses[:5]]
    views = wait_all_terminal(target.base_url, order_ids, timeout=target.timeouts.settle)
    assert {view["status"] for view in views.values()} == {"confirmed"}
    assert product(target)["stock"] == 95


def test_a_sale_of_one_hundred_units_to_two_thousand_buyers_confirms_exactly_one_hundred(target):
    target.seed(100)
    buyers = [(address, {}) for address in addresses(2_000, network=2)]
    # Every buyer asks once: an answer lost between the ingress and the API would fail this.
    replies = fire_concurrently([target.base_url], buyers, processes=4)

    statuses = [r.status for r in replies]
    admitted = [r.order_id for r in replies if r.status == 202]
    assert set(statuses) <= {202, 409}, sorted(set(statuses))
    assert len(admitted) == 100, "the stock gate admits exactly the stock"
    views = wait_all_terminal(target.base_url, admitted, timeout=target.timeouts.settle)
    assert [view["status"] for view in views.values()] == ["confirmed"] * 100
    left = product(target)
    assert (left["stock"], left["available"], left["sold_out"]) == (0, 0, True)


BURST_STOCK = 1_000_000


def test_workers_rise_to_what_the_backlog_asks_and_fall_after(target):
    """Orders admitted while every worker is held make a backlog the workers cannot clear;
    the autoscaler's signal shows each of them, the workers rise to what it asks, and once
    released they decide every order and fall back to the minimum."""
    low, high = target.worker_bounds()
    assert low < high, "nothing to scale between"
    wait_until(lambda: target.worker_replicas() == low, target.timeouts.scale_down, f"{low} workers at rest")
    target.seed(BURST_STOCK)
    # As many orders as ask for every worker the autoscaler may run, and not one more.
    orders = math.ceil(high * target.orders_per_worker())

    target.hold_workers()
    try:
        buyers = [(address, {}) for address in addresses(orders, network=30)]
        replies = fire_concurrently([target.base_url], buyers, processes=4)
        assert {r.status for r in replies} == {202}, sorted({r.status for r in replies})
        wait_until(
            lambda: target.backlog().undecided_orders == orders,
            target.timeouts.settle,
            f"the signal showing {orders} undecided orders",
            interval=0.2,
        )
        wait_until(
            lambda: target.worker_replicas() == high,
            target.timeouts.scale_up,
            f"workers rising to {high} under {orders} undecided orders",
            interval=0.2,
        )
    finally:
        target.release_workers()

    # Plenty of stock: every admitted order is confirmed, and the product shows exactly that.
    wait_until(
        lambda: product(target)["stock"] == BURST_STOCK - orders,
        target.timeouts.settle,
        f"{orders} orders confirmed",
        interval=0.5,
    )
    drained = Backlog(undecided_orders=0, oldest_age_seconds=0.0)
    # A batch leaves fs:admitted just after it commits.
    wait_until(lambda: target.backlog() == drained, target.timeouts.settle, "the signal back to nothing")
    wait_until(lambda: target.worker_replicas() == low, target.timeouts.scale_down, f"back to {low} workers")


STOCK = 300
BUYERS = 1_500
ARRIVALS_PER_SECOND = 150


def test_killing_an_api_pod_and_a_worker_pod_mid_sale_loses_nothing(target):
    target.seed(STOCK)
    sale = PacedSale(target.base_url, addresses(BUYERS, network=4), rate=ARRIVALS_PER_SECOND)
    running = sale.start()
    try:
        # Mid-sale: units admitted and being applied, more buyers still arriving.
        wait_until(
            lambda: product(target)["stock"] < STOCK or sale.done.is_set(),
            target.timeouts.settle,
            "the first orders applied",
            interval=0.05,
        )
        before = product(target)
        assert not sale.done.is_set() and before["available"] > 0, f"sale over before the kills: {before}"
        killed_at = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            kills = [pool.submit(target.kill_api_pod), pool.submit(target.kill_worker_pod)]
            for kill in kills:
                kill.result()
        routed_at = time.monotonic()  # the ingress sends nothing to the killed pod any more
    finally:
        running.join(120)
    assert not running.is_alive(), "the buyers never finished"

    statuses = sale.statuses()
    assert set(statuses) <= {202, 409}, f"every buyer gets an answer: {dict(statuses)}"
    # A buyer's retry may hide only what the kill did: an answer lost before or after it is a bug.
    stray = [
        round(t - killed_at, 2)
        for t in sale.lost_at()
        if not killed_at <= t <= routed_at + target.timeouts.lost_after_kill
    ]
    assert stray == [], f"answers lost outside the kill (seconds after it): {stray}"
    admitted = sale.admitted()
    assert len(admitted) == STOCK, f"exactly the stock admitted: {dict(statuses)}"
    views = wait_all_terminal(target.base_url, admitted, timeout=target.timeouts.settle)
    assert [view["status"] for view in views.values()] == ["confirmed"] * STOCK
    left = product(target)
    assert (left["stock"], left["available"]) == (0, 0)
