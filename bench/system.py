"""The system a benchmark measures: throwaway Redis and PostgreSQL, ``flashsale api
--processes 2`` (two uvicorn processes on one port) and N workers, stopped afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from redis import Redis
from sqlalchemy import Engine

from db.migrate import migrate
from db.seed import seed
from db.session import make_engine
from service.throwaway import free_port, postgres_server, redis_server, wait_until

ADMIN_TOKEN = "bench-admin-token"


@dataclass(frozen=True)
class BenchSystem:
    url: str
    redis: Redis
    engine: Engine
    api: subprocess.Popen
    """The uvicorn supervisor; its children are the two API processes."""

    def api_pids(self) -> list[int]:
        """The uvicorn worker processes (not multiprocessing's resource tracker)."""
        with open(f"/proc/{self.api.pid}/task/{self.api.pid}/children") as listing:
            children = [int(pid) for pid in listing.read().split()]
        return [pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


@contextmanager
def running_system(workers: int, stock: int = 100):
    """Throwaway Redis and PostgreSQL, two API processes and ``workers`` workers; the demo
    product (id 1) seeded with ``stock``. Loopback is trusted, so wrk's X-Forwarded-For tells
    clients apart."""
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        database_url = stack.enter_context(postgres_server())
        migrate(database_url)
        engine = make_engine(database_url, pool_size=2)
        stack.callback(engine.dispose)
        redis = Redis.from_url(redis_url)
        stack.callback(redis.close)
        seed(engine, redis, stock=stock)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")},
            "FLASHSALE_REDIS_URL": redis_url,
            "FLASHSALE_DATABASE_URL": database_url,
            "FLASHSALE_TRUSTED_PROXIES": "127.0.0.1/32",
            "FLASHSALE_ADMIN_TOKEN": ADMIN_TOKEN,
            "FLASHSALE_LOG_LEVEL": "WARNING",
        }
        port = free_port()
        api = ["api", "--host", "127.0.0.1", "--port", str(port), "--processes", "2"]
        processes = [subprocess.Popen([sys.executable, "-m", "service.cli", *api], env=env)]
        processes += [
            subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=env) for _ in range(workers)
        ]
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _ready(url), 60, "two API processes")
            yield BenchSystem(url, redis, engine, processes[0])
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(60)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
