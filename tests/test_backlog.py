"""``GET /backlog`` and its gauges: the undecided orders worker autoscaling follows, on the
real Redis and PostgreSQL, admitted through the production admit path."""

from __future__ import annotations

import httpx
import pytest
from litestar.testing import TestClient

from service.api.app import create_app
from service.cli.dev_servers import free_port, wait_until
from service.core.keys import ADMITTED_KEY
from service.core.settings import settings_from_env
from service.sale.order_jobs import order_queue
from tests.support.orders import wait_all_terminal
from tests.support.problems import assert_problem
from worker.runner import OrderWorker

NOTHING_WAITS = {"undecided_orders": 0, "oldest_age_seconds": 0.0}


def _buy(client: httpx.Client | TestClient, buyers: int) -> list[str]:
    """One order from each of ``buyers`` clients (each its own rate-limit bucket)."""
    replies = [
        client.post("/buy", json={}, headers={"x-forwarded-for": f"10.7.0.{i}"}) for i in range(buyers)
    ]
    assert [r.status_code for r in replies] == [202] * buyers, [r.text for r in replies]
    return [r.json()["order_id"] for r in replies]


def _redis_ms(redis) -> float:
    seconds, microseconds = redis.time()
    return seconds * 1000 + microseconds / 1000


@pytest.mark.slow
def test_the_backlog_counts_each_admitted_order_until_a_worker_decides_it(system):
    system.start_apis(1)
    with httpx.Client(base_url=system.url, timeout=10) as client:
        assert client.get("/backlog").json() == NOTHING_WAITS
        order_ids = _buy(client, 7)
        waiting = client.get("/backlog").json()
        assert waiting["undecided_orders"] == 7
        assert waiting["oldest_age_seconds"] >= 0

        system.start_workers(1)
        wait_until(lambda: client.get("/backlog").json() == NOTHING_WAITS, 30, "every order decided")
    views = wait_all_terminal(system.url, order_ids, timeout=30)
    assert {view["status"] for view in views.values()} == {"confirmed"}


@pytest.fixture
def client(settings, fresh_db):
    with TestClient(create_app(settings)) as client:
        yield client


def test_the_oldest_age_is_redis_time_since_the_first_admission(client, redis):
    _buy(client, 2)
    ((_, first_ms),) = redis.zrange(ADMITTED_KEY, 0, 0, withscores=True)

    def age_between_two_redis_clock_readings() -> tuple[float, float, float]:
        before = _redis_ms(redis)
        age = client.get("/backlog").json()["oldest_age_seconds"]
        return (before - first_ms) / 1000, age, (_redis_ms(redis) - first_ms) / 1000

    low, age, high = age_between_two_redis_clock_readings()
    assert low - 0.001 <= age <= high + 0.001  # the score and the answer are whole ms
    wait_until(lambda: _redis_ms(redis) - first_ms >= 1500, 5, "Redis's clock 1.5 s past the admission")
    low, later, high = age_between_two_redis_clock_readings()
    assert later >= 1.5 and low - 0.001 <= later <= high + 0.001


def _gauges(client: TestClient) -> tuple[float, float]:
    lines = client.get("/metrics").text.splitlines()
    undecided = next(line for line in lines if line.startswith("flashsale_orders_undecided "))
    age = next(line for line in lines if line.startswith("flashsale_orders_oldest_undecided_age_seconds "))
    return float(undecided.split()[1]), float(age.split()[1])


def test_metrics_carry_the_backlog_until_a_worker_decides_it(client, redis, worker_env):
    _buy(client, 3)
    wait_until(lambda: _gauges(client)[0] == 3 and _gauges(client)[1] > 0, 10, "the backlog gauges")

    worker_env()  # the jobs' own settings: this test's Redis and database
    queue = order_queue(redis)
    OrderWorker([queue], connection=redis, serializer=queue.serializer).work(burst=True)
    wait_until(lambda: _gauges(client) == (0, 0), 10, "the gauges back to nothing")


def test_the_backlog_is_a_503_problem_while_redis_is_away(settings_env, fresh_db):
    settings = settings_from_env(
        {**settings_env, "FLASHSALE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    )
    with TestClient(create_app(settings)) as client:
        response = client.get("/backlog")
    assert_problem(response, 503, "unavailable")
    assert response.headers["retry-after"] == "1"
