"""Confirmed orders per second for 1, 2 and 4 workers, every order for one hot product.

    python -m bench.workers [--orders 20000] [--lanes 4] [--runs 5] [--appendfsync everysec]

Orders are admitted first (through lua/admit.lua, as the API does: each on one of the
product's FLASHSALE_DRAIN_LANES pending lists, and one draining job per lane), their jobs held
off the queue; then the workers start, and once every one of them waits for work the jobs go
back on the queue: each worker takes a lane's job and applies its list in batches of
FLASHSALE_WORKER_BATCH_SIZE, as they would on sale day. Two
figures: **confirmed/s**, orders over the span of their ``decided_at`` in PostgreSQL (what
buyers see: an order is confirmed for ``GET /orders`` once its batch commits), and
**orders/s to the end**, orders from the first decision to the drain's end (the product's
draining flag gone). Process start-up is in neither: no worker is still importing its
modules while another drains. It runs on throwaway Redis with its AOF and PostgreSQL with fsync on; 1, 2 and 4
workers in turn, ``--runs`` times. It prints each of TARGETS with what was measured
(confirmed/s with four workers in the slowest run; more workers never slower, in every run),
saves the figures, and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

from redis import Redis
from rq.worker import Worker
from sqlalchemy import text

from bench.system import (
    APPENDFSYNC,
    admit_in_process,
    durable_postgres,
    durable_redis,
    read_durability,
    run_with,
)
from bench.verdict import AT_LEAST, Target, Verdict, add_options
from db.migrate import migrate
from db.session import make_engine
from service.core.keys import drain_flag_keys, pending_keys
from service.core.settings import settings_from_env
from service.sale.order_jobs import order_queue
from service.sale.stock_gate import seed

WORKERS = (1, 2, 4)

TARGETS = (
    Target("four", "confirmed orders/s with 4 workers, slowest run", AT_LEAST, 20_000, "#17"),
    Target(
        "more_never_slower",
        "more workers never slower: least gain, confirmed/s, from 1 to 2 or 2 to 4 workers in any run",
        AT_LEAST,
        0,
        "#17",
    ),
)


def drain_rates(env: dict[str, str], workers: int, orders: int) -> tuple[int, int]:
    """(confirmed orders/s, orders/s to the drains' end): ``workers`` workers, ``orders`` orders,
    on the servers and with the lanes ``env`` names."""
    engine = make_engine(env["FLASHSALE_DATABASE_URL"], pool_size=1)
    redis = Redis.from_url(env["FLASHSALE_REDIS_URL"])
    redis.flushall()
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE orders"))
    seed(engine, redis, stock=orders * 10)
    admit_in_process(env, orders)
    worker_env = {**os.environ, **env, "FLASHSALE_LOG_LEVEL": "WARNING"}
    queue = order_queue(redis)
    held = _hold_jobs(redis, queue)
    processes = [
        subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=worker_env)
        for _ in range(workers)
    ]
    try:
        _wait_for(lambda: _idle(queue) == workers, f"{workers} workers waiting for work")
        redis.rpush(queue.key, *held)  # wakes the waiting workers at once, one job each
        _wait_for(lambda: not redis.exists(*pending_keys(1), *drain_flag_keys(1)), "the drains' end")
        drained = datetime.now(UTC)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
    with engine.connect() as connection:
        confirmed, first, last = connection.execute(
            text("SELECT count(*), min(decided_at), max(decided_at) FROM orders WHERE status = 'confirmed'")
        ).one()
    engine.dispose()
    redis.close()
    if confirmed != orders:
        raise SystemExit(f"only {confirmed} of {orders} orders confirmed")
    confirmed_rate = orders / max((last - first).total_seconds(), 1e-3)
    return round(confirmed_rate), round(orders / (drained - first).total_seconds())


def _hold_jobs(redis: Redis, queue) -> list[bytes]:
    """Take the draining jobs admit.lua queued off the queue (their hashes stay): given back
    once every worker waits in its blocking pop, they start together. (``rq suspend`` would
    hold them too, but a suspended worker looks again only once a second: the drains of
    20,000 orders take about as long.)"""
    with redis.pipeline(transaction=True) as pipe:
        pipe.lrange(queue.key, 0, -1)
        pipe.delete(queue.key)
        held, _ = pipe.execute()
    return held


def _idle(queue) -> int:
    return sum(worker.get_state() == "idle" for worker in Worker.all(queue=queue))


def _wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"no {what} within {timeout:.0f} s")
        time.sleep(0.01)


def judge(runs: list[dict[int, dict]], where: str, verdict: Verdict) -> None:
    """``runs``: per run, each worker count's {"confirmed_per_second", "orders_per_second_to_end"}."""
    rates = [[run[workers]["confirmed_per_second"] for workers in WORKERS] for run in runs]
    every_run = "; ".join(" / ".join(f"{rate:,}" for rate in run) for run in rates)
    verdict.check(
        "four",
        min(run[-1] for run in rates),
        where,
        f"{' / '.join(map(str, WORKERS))} workers, each run: {every_run}",
    )
    gains = [
        (run[i + 1] - run[i], n, WORKERS[i], WORKERS[i + 1], run[i], run[i + 1])
        for n, run in enumerate(rates, 1)
        for i in range(len(WORKERS) - 1)
    ]
    gain, n, fewer, more, before, after = min(gains)
    detail = f"run {n} of {len(runs)}: {fewer} → {more} workers, {before:,} → {after:,}"
    verdict.check("more_never_slower", gain, where, detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.workers", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument(
        "--lanes",
        type=int,
        default=settings_from_env({}).drain_lanes,
        help="FLASHSALE_DRAIN_LANES: how many lanes the product's orders are split over",
    )
    parser.add_argument("--runs", type=int, default=5, help="how many times 1, 2 and 4 workers drain")
    parser.add_argument("--appendfsync", choices=APPENDFSYNC, default="everysec", help="Redis's AOF policy")
    add_options(parser)
    args = parser.parse_args(argv)
    verdict = Verdict("workers", TARGETS, args.target)
    with durable_redis(args.appendfsync) as redis_server, durable_postgres() as postgres_server:
        migrate(postgres_server.url)
        engine = make_engine(postgres_server.url, pool_size=1)
        with Redis.from_url(redis_server.url) as redis:
            durability = read_durability(redis, engine)
        engine.dispose()
        print(f"one hot product, {args.orders:,} orders in {args.lanes} lanes ({run_with(durability)})")
        print(f"{'run':>4} {'workers':>8} {'confirmed/s':>12} {'orders/s to the end':>21}")
        runs = []
        for n in range(1, args.runs + 1):
            runs.append({})
            for workers in WORKERS:
                env = {
                    "FLASHSALE_REDIS_URL": redis_server.url,
                    "FLASHSALE_DATABASE_URL": postgres_server.url,
                    "FLASHSALE_DRAIN_LANES": str(args.lanes),
                }
                confirmed, to_end = drain_rates(env, workers, args.orders)
                runs[-1][workers] = {"confirmed_per_second": confirmed, "orders_per_second_to_end": to_end}
                print(f"{n:>4} {workers:>8} {confirmed:>12,} {to_end:>21,}")
    judge(runs, run_with(durability), verdict)
    figures = {"orders": args.orders, "lanes": args.lanes, "durability": durability, "runs": runs}
    return verdict.finish(figures, args.publish)


if __name__ == "__main__":
    sys.exit(main())
