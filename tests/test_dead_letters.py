"""Draining jobs that failed every retry: their batch decided when PostgreSQL can take the
rejection, else dead letters whose orders wait ``queued``, listed by `flashsale orders failed`,
run again by the stranded-order sweep or `flashsale orders requeue`, and gone from RQ's failed
registry once decided."""

import threading
from collections import defaultdict

import httpx
import pytest
from litestar.testing import TestClient
from redis import Redis
from rq.registry import FailedJobRegistry
from sqlalchemy import text
from sqlalchemy.engine import make_url

from db.migrate import migrate, wait_for_server
from db.session import make_engine
from service.api.app import create_app
from service.cli.dev_servers import free_port, restartable_postgres, wait_until
from service.core.keys import ADMITTED_KEY, drain_flag_key, gate_key, pending_key
from service.core.settings import settings_from_env
from service.sale.order_jobs import order_queue
from service.sale.reconcile import reconcile
from service.sale.stock_gate import seed
from tests.support.admitting import admit_orders
from tests.support.cli import run_cli
from tests.support.database import order_rows
from tests.support.invariants import assert_invariants
from tests.support.orders import wait_all_terminal
from tests.support.system import System, process_env
from worker.dead_letters import failed_orders, forget_decided
from worker.runner import OrderWorker

pytestmark = pytest.mark.drain_lanes(1)  # each test follows one drain

BACKOFF = "FLASHSALE_JOB_RETRY_BACKOFF_SECONDS"


def _cli(settings_env, *args):
    return run_cli(settings_env, "orders", *args)


def _work(redis) -> None:
    """One in-process worker runs every queued job (and its immediate retries), then stops."""
    queue = order_queue(redis)
    OrderWorker([queue], connection=redis, serializer=queue.serializer).work(burst=True)


def _gate(redis) -> int:
    return int(redis.get(gate_key(1)))


def _view(settings, order_id: str) -> dict:
    with TestClient(create_app(settings)) as client:
        return client.get(f"/orders/{order_id}").json()


def test_an_order_whose_retries_all_failed_while_postgresql_was_away_waits_queued(
    settings_env, redis, fresh_db, worker_env
):
    settings = settings_from_env({**settings_env, BACKOFF: "0"})  # one retry
    (order_id,) = admit_orders(settings, 1, quantity=2)
    job_id = redis.get(drain_flag_key(1)).decode()
    worker_env(FLASHSALE_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    _work(redis)
    assert order_rows(fresh_db) == {}, "PostgreSQL was away: nothing could be written"
    assert FailedJobRegistry(queue=order_queue(redis)).get_job_ids() == [job_id]
    assert redis.zscore(ADMITTED_KEY, order_id) is not None and _gate(redis) == 98, "undecided, units held"
    assert redis.llen(pending_key(1)) == 1 and redis.get(drain_flag_key(1)).decode() == job_id
    assert _view(settings, order_id)["status"] == "queued", "never terminal without its row"

    listed = _cli(settings_env, "failed")
    assert listed.returncode == 0
    assert order_id in listed.stdout and "OperationalError" in listed.stdout
    assert "1 failed order(s)" in listed.stderr

    assert _cli(settings_env, "requeue").returncode == 2  # says what to requeue
    requeued = _cli(settings_env, "requeue", order_id)
    assert requeued.returncode == 0 and "requeued 1 order(s)" in requeued.stderr

    worker_env()
    _work(redis)
    assert order_rows(fresh_db) == {order_id: ("confirmed", None, 2)}
    assert "0 failed order(s)" in _cli(settings_env, "failed").stderr
    assert FailedJobRegistry(queue=order_queue(redis)).count == 0 and redis.zcard(ADMITTED_KEY) == 0
    assert not redis.exists(pending_key(1), drain_flag_key(1))
    assert _gate(redis) == 98 and reconcile(redis, fresh_db) == []


def test_an_order_whose_retries_all_failed_while_postgresql_answered_is_rejected_and_no_dead_letter(
    settings_env, redis, fresh_db, worker_env
):
    settings = settings_from_env({**settings_env, BACKOFF: "0,0"})
    seed(fresh_db, redis, stock=3)
    (order_id,) = admit_orders(settings, 1)
    job_id = redis.get(drain_flag_key(1)).decode()
    impatient = make_url(settings.database_url).update_query_dict({"options": "-c lock_timeout=100"})
    worker_env(FLASHSALE_DATABASE_URL=impatient.render_as_string(hide_password=False))
    with fresh_db.connect() as blocker, blocker.begin():
        # Every attempt's stock update gives up on this lock; the rejection needs no such lock.
        blocker.execute(text("SELECT 1 FROM products WHERE id = 1 FOR NO KEY UPDATE"))
        _work(redis)

    assert order_rows(fresh_db) == {order_id: ("rejected", "failed", 1)}
    assert redis.zscore(ADMITTED_KEY, order_id) is None and _gate(redis) == 3, "decided, units back"
    assert not redis.exists(pending_key(1), drain_flag_key(1)), "nothing left: the drain ended"
    registry = FailedJobRegistry(queue=order_queue(redis))
    assert registry.get_job_ids() == [job_id], "RQ files the job after its callback decided the batch"
    assert failed_orders(redis) == [], "decided: not a dead letter"
    assert forget_decided(redis) == 1 and registry.count == 0
    assert _view(settings, order_id) == {"order_id": order_id, "status": "rejected", "reason": "failed"}
    assert reconcile(redis, fresh_db) == [], "the gate and the database agree"


@pytest.fixture
def stoppable_postgres():
    """A PostgreSQL of this test's own, to stop and start again."""
    with restartable_postgres() as server:
        yield server


class Watch:
    """From a background thread, until the block ends: every answer of GET /orders/{id} for
    each order (``status`` or ``status/reason``, or the HTTP status when not 200), and the
    highest stock gate seen."""

    def __init__(self, url: str, order_ids: list[str], redis: Redis) -> None:
        self.url, self.order_ids, self.redis = url, order_ids, redis
        self.answers: dict[str, list[str]] = defaultdict(list)
        self.highest_gate = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self._stop.is_set():
                self.highest_gate = max(self.highest_gate, int(self.redis.get(gate_key(1))))
                for order_id in self.order_ids:
                    response = client.get(f"/orders/{order_id}")
                    view = response.json() if response.status_code == 200 else {}
                    answer = "/".join(filter(None, (view.get("status"), view.get("reason"))))
                    self.answers[order_id].append(answer or str(response.status_code))
                self._stop.wait(0.05)


def _buy(url: str, buyer: int) -> str:
    response = httpx.post(f"{url}/buy", json={}, headers={"x-forwarded-for": f"10.3.0.{buyer}"})
    assert response.status_code == 202, response.text
    return response.json()["order_id"]


@pytest.mark.slow
def test_orders_dead_lettered_while_postgresql_is_down_wait_queued_and_are_confirmed_once_it_returns(
    stoppable_postgres, redis_url, redis, tmp_path
):
    """Real `flashsale api` and `flashsale worker` processes, PostgreSQL stopped through every
    retry (waits 0, 0, about 1 s): each order is a dead letter, visibly waiting, then decided
    by the stranded-order sweep once PostgreSQL is back; the reconciler (every second) never
    hands a held unit out meanwhile."""
    database_url = stoppable_postgres.url
    migrate(database_url)
    engine = make_engine(database_url)
    seed(engine, redis, stock=10)
    env = {
        **process_env(redis_url, database_url),
        BACKOFF: "0,0,1",
        "FLASHSALE_RECONCILE_INTERVAL_SECONDS": "1",
        "FLASHSALE_DRAIN_LANES": "1",
    }
    system = System(env=env, log_dir=tmp_path)
    registry = FailedJobRegistry(queue=order_queue(redis))
    try:
        system.start_apis(1)
        system.start_workers(2)
        stoppable_postgres.stop()
        order_ids = [_buy(system.url, buyer) for buyer in range(3)]
        with Watch(system.url, order_ids, redis) as watch:
            wait_until(lambda: registry.count == 1, 30, "the drain's retries spent", interval=0.1)
            for order_id in order_ids:
                view = httpx.get(f"{system.url}/orders/{order_id}").json()
                assert view == {"order_id": order_id, "status": "queued"}, "dead letters wait, queued"
            listed = run_cli(env, "orders", "failed")
            assert all(order_id in listed.stdout for order_id in order_ids), listed.stdout
            assert sum("OperationalError" in line for line in listed.stdout.splitlines()) == 3
            assert "3 failed order(s)" in listed.stderr
            assert _gate(redis) == 7 and redis.zcard(ADMITTED_KEY) == 3, "their units stay held"

            stoppable_postgres.start()
            wait_for_server(database_url, timeout=30)  # its port opens before it takes connections
            assert reconcile(redis, engine) == [] and _gate(redis) == 7, "held units are not handed out"
            assert registry.count == 1, "reconciled while the dead letter still waited for the sweep"
            views = wait_all_terminal(system.url, order_ids, timeout=60)
            # The watch polls on its own: the block ends once it has seen each decision too.
            wait_until(
                lambda: all(watch.answers[order_id][-1:] != ["queued"] for order_id in order_ids),
                10,
                "the watch to see every order decided",
            )
        assert {view["status"] for view in views.values()} == {"confirmed"}
        for order_id in order_ids:
            answers = watch.answers[order_id]
            settled = answers.index("confirmed")
            assert set(answers[:settled]) == {"queued"} and set(answers[settled:]) == {"confirmed"}, answers
        assert watch.highest_gate == 7, "no reconciler pass (workers run one a second) handed one out"
        assert registry.count == 0, "no decided order in the failed registry"
        assert "0 failed order(s)" in run_cli(env, "orders", "failed").stderr
        assert redis.zcard(ADMITTED_KEY) == 0
        assert_invariants(engine, redis, order_ids, 10)
        logs = "".join(log.read_text() for log in tmp_path.glob("*.log"))
        assert (
            "wait, undecided, for PostgreSQL" in logs and "error while executing failure callback" not in logs
        )
    finally:
        system.stop()
        engine.dispose()
