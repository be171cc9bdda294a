"""Confirmed orders per second for 1, 2 and 4 workers, every order for one hot product.

    python -m bench.workers [--orders 2000]

Orders are admitted first (through lua/admit.lua, as the API does, so workers can claim
them in batches of FLASHSALE_WORKER_BATCH_SIZE), then the workers start and drain the queue
in burst mode; the figure is orders confirmed per second from the workers' start to
the last row. It uses a throwaway redis-server and the database ``flashsale_bench`` on the
PostgreSQL named by FLASHSALE_DATABASE_URL (default: the local one; fsync on, as in
production), or a throwaway PostgreSQL (fsync off: flattering) when none answers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from contextlib import ExitStack

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


async def _admit(redis_url: str, database_url: str, orders: int) -> None:
    settings = settings_from_env({"FLASHSALE_REDIS_URL": redis_url, "FLASHSALE_DATABASE_URL": database_url})
    resources = open_resources(settings)
    try:
        for i in range(orders):
            client = ClientIdentity(f"10.0.{i // 256}.{i % 256}", None, {}, "x-api-key")
            admission = await admit(resources, client, None, 1, 1, None)
            assert admission.decision is Decision.ADMITTED, admission
    finally:
        await close_resources(resources)


def drain_rate(redis_url: str, database_url: str, workers: int, orders: int) -> float:
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
    started = time.perf_counter()
    processes = [
        subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--burst"], env=env)
        for _ in range(workers)
    ]
    for process in processes:
        process.wait()
    elapsed = time.perf_counter() - started
    with engine.connect() as connection:
        confirmed = connection.execute(
            text("SELECT count(*) FROM orders WHERE status = 'confirmed'")
        ).scalar()
    engine.dispose()
    redis.close()
    if confirmed != orders:
        raise SystemExit(f"only {confirmed} of {orders} orders confirmed")
    return orders / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.workers", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000)
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        database_url, database = _database(stack)
        migrate(database_url)
        print(f"confirmed orders/s, one hot product, {args.orders} orders ({database}, start-up included)")
        for workers in (1, 2, 4):
            print(
                f"  {workers} worker(s)  {drain_rate(redis_url, database_url, workers, args.orders):>8,.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
