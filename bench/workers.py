"""Confirmed orders per second for 1, 2 and 4 workers, every order for one hot product.

    python -m bench.workers [--orders 20000]

Orders are admitted first (through lua/admit.lua, as the API does, so workers can claim
them in batches of FLASHSALE_WORKER_BATCH_SIZE), then the workers start and drain the queue
in burst mode. Two figures: **confirmed/s**, orders over the span of their ``decided_at``
in PostgreSQL (what buyers see: an order is confirmed for ``GET /orders`` once its batch
commits), and **jobs/s**, RQ jobs finished from the first decision to the last worker's exit
(a job whose order an earlier batch decided returns without a database call). Process
start-up is in neither. It uses a throwaway redis-server and the database ``flashsale_bench``
on the PostgreSQL named by FLASHSALE_DATABASE_URL (default: the local one; fsync on, as in
production), or a throwaway PostgreSQL (fsync off: flattering) when none answers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from contextlib import ExitStack
from datetime import UTC, datetime

from redis import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

from db.migrate import DatabaseUnavailable, migrate, wait_for_server
from db.seed import seed
from db.session import make_engine
from service.admission import Decision, admit
from service.identity import ClientIdentity
from service.resources import close_resources, open_resources
from service.settings import get_settings, settings_from_env
from service.throwaway import postgres_server, redis_server


def _database(stack: ExitStack) -> tuple[str, str]:
    url = make_url(get_settings().database_url).set(database="flashsale_bench")
    rendered = url.render_as_string(hide_password=False)
    try:
        wait_for_server(rendered, timeout=3)
        return rendered, "local PostgreSQL, fsync on"
    except DatabaseUnavailable:
        return stack.enter_context(postgres_server()), "throwaway PostgreSQL, fsync off"


ADMIT_CONCURRENCY = 256


async def _admit(redis_url: str, database_url: str, orders: int) -> None:
    settings = settings_from_env({"FLASHSALE_REDIS_URL": redis_url, "FLASHSALE_DATABASE_URL": database_url})
    resources = open_resources(settings)

    async def one(i: int) -> None:
        client = ClientIdentity(f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", None, {}, "x-api-key")
        admission = await admit(resources, client, None, 1, 1, None)
        assert admission.decision is Decision.ADMITTED, admission

    try:
        for start in range(0, orders, ADMIT_CONCURRENCY):
            await asyncio.gather(*(one(i) for i in range(start, min(start + ADMIT_CONCURRENCY, orders))))
    finally:
        await close_resources(resources)


def drain_rates(redis_url: str, database_url: str, workers: int, orders: int) -> tuple[float, float]:
    """(confirmed orders/s, jobs/s) for ``workers`` burst workers draining ``orders`` orders."""
    engine = make_engine(database_url, pool_size=1)
    redis = Redis.from_url(redis_url)
    redis.flushall()
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE orders"))
    seed(engine, redis, stock=orders * 10)
    asyncio.run(_admit(redis_url, database_url, orders))
    env = {
        **os.environ,
        "FLASHSALE_REDIS_URL": redis_url,
        "FLASHSALE_DATABASE_URL": database_url,
        "FLASHSALE_LOG_LEVEL": "WARNING",
    }
    processes = [
        subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--burst"], env=env)
        for _ in range(workers)
    ]
    for process in processes:
        process.wait()
    drained = datetime.now(UTC)
    with engine.connect() as connection:
        confirmed, first, last = connection.execute(
            text("SELECT count(*), min(decided_at), max(decided_at) FROM orders WHERE status = 'confirmed'")
        ).one()
    engine.dispose()
    redis.close()
    if confirmed != orders:
        raise SystemExit(f"only {confirmed} of {orders} orders confirmed")
    return orders / max((last - first).total_seconds(), 1e-3), orders / (drained - first).total_seconds()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.workers", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20_000)
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        database_url, database = _database(stack)
        migrate(database_url)
        print(f"one hot product, {args.orders:,} orders ({database})")
        print(f"{'workers':>8} {'confirmed/s':>12} {'jobs/s':>8}")
        for workers in (1, 2, 4):
            confirmed, jobs = drain_rates(redis_url, database_url, workers, args.orders)
            print(f"{workers:>8} {confirmed:>12,.0f} {jobs:>8,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
