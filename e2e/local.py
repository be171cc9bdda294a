"""The local target: private Redis and PostgreSQL, three API processes behind nginx as the
ingress, and worker processes sized by a local stand-in for KEDA."""

from __future__ import annotations

import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path

from redis import Redis
from rq import Worker
from rq.suspension import resume, suspend

from db.migrate import migrate
from db.session import make_engine
from e2e.ingress import Ingress
from e2e.local_autoscaler import Autoscaler, Scaling, read_backlog
from e2e.targets import HELD, HOLD_LIMIT_SECONDS, Target, Timeouts
from service.cli.dev_servers import postgres_server, redis_server, wait_until
from service.sale.backlog import Backlog
from service.sale.order_jobs import order_queue
from service.sale.stock_gate import seed
from tests.support.system import System, process_env

API_REPLICAS = 3


class LocalTarget(Target):
    # A killed process's connections are reset at once; nginx answers them within the kill.
    timeouts = Timeouts(settle=90, scale_up=60, scale_down=60, lost_after_kill=1)

    def __init__(self) -> None:
        self._stack = ExitStack()
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise

    def _start(self) -> None:
        stack = self._stack
        redis_url = stack.enter_context(redis_server())
        database_url = stack.enter_context(postgres_server())
        migrate(database_url)
        self._engine = make_engine(database_url, pool_size=1)
        stack.callback(self._engine.dispose)
        self._redis = Redis.from_url(redis_url)
        stack.callback(self._redis.close)
        seed(self._engine, self._redis)

        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flashsale-e2e-")))
        self.processes = System(env=process_env(redis_url, database_url), log_dir=log_dir)
        stack.callback(self.processes.stop)  # after the autoscaler and ingress (callbacks run LIFO)
        self.scaling = Scaling()
        self._lock = threading.Lock()
        self.processes.start_apis(API_REPLICAS)
        self.processes.start_workers(self.scaling.min_replicas)

        self.ingress = Ingress(self.processes.urls, log_dir)
        self.ingress.start()
        stack.callback(self.ingress.stop)
        self.base_url = self.ingress.url
        self.autoscaler = Autoscaler(self.processes, self.scaling, self._lock)
        self.autoscaler.start()
        stack.callback(self.autoscaler.stop)

    def api_replicas(self) -> int:
        return sum(process.poll() is None for process, _ in self.processes.apis)

    def worker_replicas(self) -> int:
        with self._lock:
            return sum(process.poll() is None for process in self.processes.workers)

    def worker_bounds(self) -> tuple[int, int]:
        return self.scaling.min_replicas, self.scaling.max_replicas

    def orders_per_worker(self) -> float:
        return self.scaling.orders_per_replica

    def backlog(self) -> Backlog:
        backlog = read_backlog(self.processes.urls)
        assert backlog is not None, "no API process answered /backlog"
        return backlog

    def hold_workers(self) -> None:
        suspend(self._redis, HOLD_LIMIT_SECONDS)
        # An idle worker sees the suspension within a maintenance interval (worker/runner.py).
        wait_until(self._all_held, 30, "every worker held", interval=0.1)

    def _all_held(self) -> bool:
        with self._lock:
            running = {process.pid for process in self.processes.workers if process.poll() is None}
        states = {worker.pid: worker.get_state() for worker in Worker.all(queue=order_queue(self._redis))}
        return all(states.get(pid) == HELD for pid in running)

    def release_workers(self) -> None:
        resume(self._redis)

    def seed(self, stock: int) -> None:
        seed(self._engine, self._redis, stock=stock)

    def kill_api_pod(self) -> None:
        self.processes.kill_api(0)
        # Until the replacement is ready the ingress keeps the dead address, as it keeps an
        # endpoint until the endpoints controller drops it: it must route around it.
        self.processes.start_apis(1)
        self.ingress.backends = self.processes.urls

    def kill_worker_pod(self) -> None:
        with self._lock:
            self.processes.kill_worker(0)
            self.processes.start_workers(1)

    def diagnostics(self) -> str:
        scaling = "\n".join(self.autoscaler.events[-40:])
        largest = f"largest backlog {self.autoscaler.largest}"
        ingress = f"ingress errors:\n{self.ingress.error_log()}"
        return f"scaling {self.scaling}, {largest}\n{scaling}\n{ingress}\n{self.processes.logs()}"

    def close(self) -> None:
        self._stack.close()
