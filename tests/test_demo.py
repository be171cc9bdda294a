"""The seed's own demo, against a real API process and a real worker."""

import httpx
import pytest

from tests.support.database import product_state
from tests.support.orders import wait_all_terminal

pytestmark = pytest.mark.slow


def test_ten_instant_buys_give_five_202_then_five_429_and_five_confirmed_orders(system, fresh_db):
    system.start_apis(1)
    system.start_workers(1)
    with httpx.Client(base_url=system.url, timeout=10) as client:
        # Exactly the README's curl loop: no X-Forwarded-For, one client.
        responses = [client.post("/buy", json={}) for _ in range(10)]
    assert [r.status_code for r in responses] == [202] * 5 + [429] * 5
    assert all(int(r.headers["retry-after"]) >= 1 for r in responses[5:])
    assert all(r.headers["content-type"] == "application/problem+json" for r in responses[5:])

    order_ids = [r.json()["order_id"] for r in responses[:5]]
    views = wait_all_terminal(system.url, order_ids, timeout=30)
    assert {view["status"] for view in views.values()} == {"confirmed"}
    assert product_state(fresh_db)[0] == 95
