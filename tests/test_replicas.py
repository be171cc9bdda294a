"""Invariant 1: one client's limit holds across API replicas sharing one Redis."""

import pytest

from tests.support.load import hammer

pytestmark = pytest.mark.slow

CAPACITY = 5
REFILL_PER_SEC = 1.0


def test_one_client_round_robin_over_three_replicas_gets_capacity_plus_refill(system):
    system.start_apis(3)
    replies = hammer(system.urls, "203.0.113.50", seconds=5, processes=4)

    window = max(r.done_at for r in replies) - min(r.sent_at for r in replies)
    bound = CAPACITY + REFILL_PER_SEC * window
    admitted = sum(r.status == 202 for r in replies)
    limited = [r for r in replies if r.status == 429]
    assert len(replies) > 10 * bound, "the client must ask far more than it may have"
    assert bound - 1 <= admitted <= bound + 1, (admitted, bound)
    assert len(limited) + admitted == len(replies)
    assert all(r.retry_after and int(r.retry_after) >= 1 for r in limited)


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
