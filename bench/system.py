"""The system a benchmark measures: throwaway Redis and PostgreSQL as durable as a sale's,
``flashsale api --processes 2`` (two uvicorn processes on one port) and N workers, stopped
afterwards.

Redis keeps its AOF, synced every second or on every write (``appendfsync`` everysec or always,
the chart's default: see "Running Redis for a sale" in docs/operating-redis-and-postgresql.md),
and PostgreSQL syncs every commit (fsync on); ``read_durability`` reads back what the servers
really run with, for every table to say."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from redis import Redis
from sqlalchemy import Engine

from db.migrate import migrate
from db.session import make_engine
from service.cli.dev_servers import Server, free_port, restartable_postgres, restartable_redis, wait_until
from service.core.settings import settings_from_env
from service.limiter.identity import ClientIdentity
from service.sale.admission import Decision, admit
from service.sale.resources import close_resources, open_resources
from service.sale.stock_gate import seed

ADMIN_TOKEN = "bench-admin-token"
APPENDFSYNC = ("everysec", "always")
"""The AOF policies a sale runs with: always (charts/flashsale/values.yaml) loses no 202 in a
crash, everysec up to a second of them, for the throughput."""
SLOW_BUCKETS = {"FLASHSALE_RATE_CAPACITY": "100", "FLASHSALE_RATE_REFILL_PER_SEC": "0.001"}
"""Far more tokens than one of many clients spends in a benchmark, and one more only after
1,000 s: no such client is ever limited, and one over its limit stays there (every answer of
a path is its status)."""


def spend_bucket(url: str) -> None:
    """Put the one client without X-Forwarded-For over its limit."""
    with httpx.Client(base_url=url, timeout=5) as client:
        while client.post("/buy", json={}).status_code != 429:
            pass


@contextmanager
def durable_redis(appendfsync: str, *options: str) -> Iterator[Server]:
    """A throwaway redis-server with its AOF on, syncing ``appendfsync`` (one of APPENDFSYNC);
    ``options`` (``"--name", "value"`` pairs) come last."""
    with restartable_redis(None, "--appendonly", "yes", "--appendfsync", appendfsync, *options) as server:
        yield server


@contextmanager
def durable_postgres() -> Iterator[Server]:
    """A throwaway PostgreSQL that syncs its commits. service/cli/dev_servers.py runs it with fsync
    off, which suits tests but flatters a benchmark: the same cluster is restarted with fsync
    on (of two ``-c`` settings the later wins)."""
    with restartable_postgres() as server:
        server.command = [*server.command, "-c", "fsync=on"]
        server.restart()
        yield server


def read_durability(redis: Redis, engine: Engine | None = None) -> dict:
    """What the servers report they run with (not what was asked of them)."""
    settings = {
        "redis": {
            "version": redis.info("server")["redis_version"],
            **redis.config_get("appendonly"),
            **redis.config_get("appendfsync"),
            **redis.config_get("maxmemory"),
            **redis.config_get("maxmemory-policy"),
        }
    }
    if engine is not None:
        with engine.connect() as connection:
            settings["postgresql"] = {
                name: connection.exec_driver_sql(f"SHOW {name}").scalar_one()
                for name in ("server_version", "fsync", "synchronous_commit")
            }
    return settings


def run_with(settings: dict) -> str:
    """``read_durability``'s answer in a few words, as the tables show it."""
    redis = settings["redis"]
    words = [f"Redis AOF {redis['appendfsync']}" if redis["appendonly"] == "yes" else "Redis, no AOF"]
    if int(redis.get("maxmemory", 0)):
        words[0] += f" with maxmemory {int(redis['maxmemory']) // 2**20}mb ({redis['maxmemory-policy']})"
    if "postgresql" in settings:
        postgresql = settings["postgresql"]
        words.append(f"PostgreSQL fsync {postgresql['fsync']}")
        if postgresql["synchronous_commit"] != "on":
            words.append(f"synchronous_commit {postgresql['synchronous_commit']}")
    return ", ".join(words)


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

    def durability(self) -> dict:
        return read_durability(self.redis, self.engine)

    def start_worker(self) -> subprocess.Popen:
        worker = subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=self.env)
        self.workers.append(worker)
        return worker


@contextmanager
def running_system(
    workers: int,
    appendfsync: str,
    stock: int = 100,
    settings: dict[str, str] | None = None,
    redis_options: tuple[str, ...] = (),
):
    """Durable throwaway Redis (AOF, ``appendfsync``, then ``redis_options``) and PostgreSQL,
    two API processes and ``workers`` workers; the demo product (id 1) seeded with ``stock``.
    Loopback is trusted, so wrk's X-Forwarded-For tells clients apart; ``settings``
    (FLASHSALE_* variables) come last."""
    with ExitStack() as stack:
        redis_server = stack.enter_context(durable_redis(appendfsync, *redis_options))
        postgres_server = stack.enter_context(durable_postgres())
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
            **(settings or {}),
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


ADMIT_CONCURRENCY = 256


def admit_in_process(env: Mapping[str, str], orders: int, with_records: bool = False) -> None:
    """``orders`` orders of the demo product, a unit each from a client of its own, admitted
    through the production admission (lua/admit.lua), ADMIT_CONCURRENCY at a time, against the
    servers ``env`` names; ``with_records``: each also with a customer id and an
    Idempotency-Key of its own."""

    async def admit_all() -> None:
        resources = open_resources(settings_from_env(env))

        async def one(i: int) -> None:
            address = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
            customer, key = (f"customer-{i}", f"key-{i}") if with_records else (None, None)
            admission = await admit(
                resources, ClientIdentity(address, customer, {}, "x-api-key"), None, 1, 1, key
            )
            assert admission.decision is Decision.ADMITTED, admission

        try:
            for start in range(0, orders, ADMIT_CONCURRENCY):
                await asyncio.gather(*(one(i) for i in range(start, min(start + ADMIT_CONCURRENCY, orders))))
        finally:
            await close_resources(resources)

    asyncio.run(admit_all())
