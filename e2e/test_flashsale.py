"""The whole system from outside, through the ingress: the same tests on every target."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from e2e.buyers import PacedSale, addresses, one_client_address
from e2e.targets import Target
from service.throwaway import wait_until
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
    # Buyers retry a lost answer with their Idempotency-Key. On our 2-core CI machine the local
    # target's proxy now and then reports a backend's answer lost (EOF after the backend logged
    # it; cause not found, see issue #7's note); a retry returns the same order, so the count
    # below still proves exactly the stock.
    replies = fire_concurrently([target.base_url], buyers, processes=4, retry_lost=True)

    statuses = [r.status for r in replies]
    admitted = [r.order_id for r in replies if r.status == 202]
    assert set(statuses) <= {202, 409}, sorted(set(statuses))
    assert len(admitted) == 100, "the stock gate admits exactly the stock"
    views = wait_all_terminal(target.base_url, admitted, timeout=target.timeouts.settle)
    assert [view["status"] for view in views.values()] == ["confirmed"] * 100
    left = product(target)
    assert (left["stock"], left["available"], left["sold_out"]) == (0, 0, True)


BURST_STOCK = 1_000_000
WAVE = 1_500
MAX_WAVES = 40


def test_workers_rise_under_a_queue_burst_and_fall_after(target):
    low, high = target.worker_bounds()
    assert low < high, "nothing to scale between"
    wait_until(lambda: target.worker_replicas() == low, target.timeouts.scale_down, f"{low} workers at rest")
    target.seed(BURST_STOCK)

    admitted: list[str] = []
    calm = threading.Event()

    def burst() -> None:
        # Waves of new buyers until the workers have risen: the queue stays long while they do.
        for wave in range(MAX_WAVES):
            if calm.is_set():
                return
            buyers = [(address, {}) for address in addresses(WAVE, network=30 + wave)]
            # Four client processes: two workers must not drain a wave as fast as it is admitted.
            # Lost answers are asked again with the buyer's key (see the hundred-unit sale).
            replies = fire_concurrently([target.base_url], buyers, processes=4, retry_lost=True)
            assert {r.status for r in replies} == {202}, sorted({r.status for r in replies})
            admitted.extend(r.order_id for r in replies)

    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(burst)
        try:
            wait_until(
                lambda: target.worker_replicas() > low or load.done(),
                target.timeouts.scale_up,
                "workers to rise under the burst",
                interval=0.2,
            )
            risen = target.worker_replicas()
        finally:
            calm.set()
        load.result()
    assert low < risen <= high, f"workers {risen} under the burst, bounds [{low}, {high}]"

    # Plenty of stock: every admitted order is confirmed, and the product shows exactly that.
    wait_until(
        lambda: product(target)["stock"] == BURST_STOCK - len(admitted),
        target.timeouts.settle,
        f"{len(admitted)} orders confirmed",
        interval=0.5,
    )
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
        with ThreadPoolExecutor(2) as pool:
            kills = [pool.submit(target.kill_api_pod), pool.submit(target.kill_worker_pod)]
            for kill in kills:
                kill.result()
    finally:
        running.join(120)
    assert not running.is_alive(), "the buyers never finished"

    statuses = sale.statuses()
    assert set(statuses) <= {202, 409}, f"every buyer gets an answer: {dict(statuses)}"
    admitted = sale.admitted()
    assert len(admitted) == STOCK, f"exactly the stock admitted: {dict(statuses)}"
    views = wait_all_terminal(target.base_url, admitted, timeout=target.timeouts.settle)
    assert [view["status"] for view in views.values()] == ["confirmed"] * STOCK
    left = product(target)
    assert (left["stock"], left["available"]) == (0, 0)
