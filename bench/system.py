"""The system a benchmark measures: throwaway Redis and PostgreSQL, ``flashsale api
--processes 2`` (two uvicorn processes on one port) and N workers, stopped afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from redis import Redis
from sqlalchemy import Engine

from db.migrate import migrate
from db.seed import seed
from db.session import make_engine
from service.throwaway import Server, free_port, restartable_postgres, restartable_redis, wait_until

ADMIN_TOKEN = "bench-admin-token"


@dataclass(frozen=True)
class BenchSystem:
    url: str
    redis: Redis
    engine: Engine
    api: subprocess.Popen
    """The uvicorn supervisor; its children are the two API processes (it restarts one that dies)."""
    redis_server: Server
    postgres_server: Server
    env: dict[str, str]
    workers: list[subprocess.Popen] = field(default_factory=list)
    """Live and dead: a replaced worker stays here, so the end stops every one."""

    def api_pids(self) -> list[int]:
        """The uvicorn worker processes (not multiprocessing's resource tracker)."""
        with open(f"/proc/{self.api.pid}/task/{self.api.pid}/children") as listing:
            children = [int(pid) for pid in listing.read().split()]
        return [pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]

    def start_worker(self) -> subprocess.Popen:
        worker = subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=self.env)
        self.workers.append(worker)
        return worker


@contextmanager
def running_system(workers: int, stock: int = 100, redis_options: tuple[str, ...] = ()):
    """Throwaway Redis (``redis_options`` appended to its command line) and PostgreSQL, two
    API processes and ``workers`` workers; the demo product (id 1) seeded with ``stock``.
    Loopback is trusted, so wrk's X-Forwarded-For tells clients apart."""
    with ExitStack() as stack:
        redis_server = stack.enter_context(restartable_redis(None, *redis_options))
        postgres_server = stack.enter_context(restartable_postgres())
        migrate(postgres_server.url)
        engine = make_engine(postgres_server.url, pool_size=2)
        stack.callback(engine.dispose)
        redis = Redis.from_url(redis_server.url)
        stack.callback(redis.close)
        seed(engine, redis, stock=stock)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")},
            "FLASHSALE_REDIS_URL": redis_server.url,
            "FLASHSALE_DATABASE_URL": postgres_server.url,
            "FLASHSALE_TRUSTED_PROXIES": "127.0.0.1/32",
            "FLASHSALE_ADMIN_TOKEN": ADMIN_TOKEN,
            "FLASHSALE_LOG_LEVEL": "WARNING",
        }
        port = free_port()
        api = ["api", "--host", "127.0.0.1", "--port", str(port), "--processes", "2"]
        supervisor = subprocess.Popen([sys.executable, "-m", "service.cli", *api], env=env)
        url = f"http://127.0.0.1:{port}"
        system = BenchSystem(url, redis, engine, supervisor, redis_server, postgres_server, env)
        try:
            for _ in range(workers):
                system.start_worker()
            wait_until(lambda: _ready(url), 60, "two API processes")
            yield system
        finally:
            for process in (supervisor, *system.workers):
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in (supervisor, *system.workers):
                process.wait(60)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
