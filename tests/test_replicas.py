"""Invariant 1: one client's limit holds across API replicas sharing one Redis."""

import pytest

from tests.support.load import assert_admitted_within, hammer

pytestmark = pytest.mark.slow

CAPACITY = 5
REFILL_PER_SEC = 1.0


def test_one_client_round_robin_over_three_replicas_gets_capacity_plus_refill(system):
    system.start_apis(3)
    replies = hammer(system.urls, "203.0.113.50", seconds=5, processes=4)

    assert_admitted_within(replies, lambda window: CAPACITY + REFILL_PER_SEC * window)
    assert all(r.retry_after and int(r.retry_after) >= 1 for r in replies if r.status == 429)


def test_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing(system, settings_env):
    system.env = {**settings_env, "FLASHSALE_TRUSTED_PROXIES": ""}
    system.start_apis(2)
    # Every request claims another address; the API must still see one client (127.0.0.1).
    import httpx

    with httpx.Client(timeout=10) as client:
        statuses = [
            client.post(
                f"{system.urls[i % 2]}/buy", json={}, headers={"x-forwarded-for": f"198.51.100.{i}"}
            ).status_code
            for i in range(10)
        ]
    assert statuses.count(202) == CAPACITY
    assert statuses.count(429) == 10 - CAPACITY
