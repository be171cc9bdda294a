"""The e2e local autoscaler does the HPA's arithmetic over the chart's two KEDA triggers, on
the signal real API processes serve."""

from __future__ import annotations

import httpx
import pytest

from e2e.local_autoscaler import Scaling, desired_replicas, read_backlog
from service.cli.dev_servers import free_port
from service.sale.backlog import Backlog

SCALING = Scaling(orders_per_replica=50, oldest_age_seconds=5.0, min_replicas=2, max_replicas=4)


def _wish(undecided: int, age: float, current: int) -> int:
    return desired_replicas(Backlog(undecided_orders=undecided, oldest_age_seconds=age), current, SCALING)


@pytest.mark.parametrize(
    ("undecided", "current", "wanted"),
    [
        (0, 3, 2),  # nothing waits: the minimum
        (120, 2, 3),  # AverageValue: ceil(120 / 50), whatever the replicas now
        (120, 4, 3),
        (200, 2, 4),  # exactly what asks for every worker
        (5_000, 2, 4),  # never above the maximum
        (105, 2, 2),  # 5 % over the target: inside the HPA's 10 % tolerance
        (111, 2, 3),  # 11 % over: outside it
    ],
)
def test_undecided_orders_ask_one_worker_per_target(undecided, current, wanted):
    assert _wish(undecided, 0.0, current) == wanted


@pytest.mark.parametrize(
    ("age", "current", "wanted"),
    [
        (7.5, 2, 3),  # Value: ceil(current x age / target)
        (5.4, 2, 2),  # within the tolerance
        (60.0, 2, 4),
        (1.0, 4, 2),
    ],
)
def test_the_oldest_age_asks_more_workers_in_proportion(age, current, wanted):
    assert _wish(0, age, current) == wanted


def test_the_larger_wish_of_the_two_triggers_wins():
    assert _wish(150, 1.0, 2) == 3  # the orders ask 3, the age 1
    assert _wish(10, 10.0, 2) == 4  # the orders ask 1, the age 4


@pytest.mark.slow
def test_the_signal_is_read_from_the_first_api_process_that_answers(system):
    system.start_apis(1)
    with httpx.Client(base_url=system.url, timeout=10) as client:
        for i in range(3):
            assert client.post("/buy", json={}, headers={"x-forwarded-for": f"10.6.0.{i}"}).status_code == 202
    gone = f"http://127.0.0.1:{free_port()}"  # a replica just killed
    backlog = read_backlog([gone, system.url])
    assert backlog is not None and backlog.undecided_orders == 3
    assert read_backlog([gone]) is None
