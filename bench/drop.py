"""The mixed drop: a sale of 5,000 units met by 200,000 requests from 20,000 clients, and a
drop of 100,000 units on the chart's default Redis.

    python -m bench.drop                 # part of `make bench`
    python -m bench.drop --requests 50000 --stock 2000 --big-stock 0

Twice: with Redis's AOF synced every second, then on every write (``appendfsync`` everysec,
then always), each on a fresh running_system (two API processes, two workers, throwaway Redis
and PostgreSQL with fsync on). Then once more as the chart runs Redis (issue 17): AOF always,
``noeviction`` and the maxmemory the chart's default values give (``chart_redis_maxmemory_mb``,
which tests/test_chart.py holds to what the chart renders), with ``--big-stock`` units
(100,000) met by three requests per unit from 200,000 clients.

In each, wrk (``-t2 -c64``) sends the requests (``--requests`` ``POST /buy {}`` spread over
``--clients`` addresses in the first two), while a probe buyer (20 requests/s, a new address
each) times single requests: latency over time. Afterwards it waits until every 202 is
decided in PostgreSQL. Throughput by outcome per second comes from the API's own per-second
counts (``fs:stats:<second>``, what the dashboard shows). It prints each of TARGETS with what
was measured (exactly the stock confirmed, an order for every 202 and none without one, every
order terminal within 5 s of the last request, p99, no 5xx: the chart's Redis refusing a
write is a 503), saves the figures with a PNG plot per run, and exits 1 when a target is
missed.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from sqlalchemy import text

from bench.saved import shown
from bench.system import APPENDFSYNC, BenchSystem, run_with, running_system
from bench.verdict import AT_MOST, EXACTLY, Target, Verdict, add_options
from bench.wrk import run_wrk
from service.core.keys import ADMITTED_KEY, stats_key
from service.sale.stats import OUTCOMES

PROBE_PER_SECOND = 20
CHART_VALUES = Path(__file__).resolve().parent.parent / "charts" / "flashsale" / "values.yaml"
BIG_DROP_CLIENTS = 200_000
DECIDED_WITHIN_SECONDS = 120
"""How long to wait for the last order before judging what is left undecided."""

TARGETS = (
    Target("confirmed", "units confirmed minus the stock (exactly the stock sold)", EXACTLY, 0, "#7"),
    Target("undecided", "202s minus decided orders (every 202 decided, none without one)", EXACTLY, 0, "#7"),
    Target("terminal", "every order terminal, s after the last request", AT_MOST, 5, "#7"),
    Target("p99", "p99 ms", AT_MOST, 50, "#7"),
    Target("errors", "5xx answers and socket errors", EXACTLY, 0, "#15"),
)


@dataclass
class Probe:
    """One buyer at a time, a new address each: what a single request waits during the sale."""

    url: str
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    """(seconds since start, latency ms, status)"""
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self, started: float) -> None:
        with httpx.Client(timeout=10) as client:
            n = 0
            while not self._stop.wait(1 / PROBE_PER_SECOND):
                n += 1
                began = time.perf_counter()
                headers = {"x-forwarded-for": f"172.16.{n // 256 % 256}.{n % 256}"}
                status = client.post(f"{self.url}/buy", json={}, headers=headers).status_code
                self.samples.append((began - started, (time.perf_counter() - began) * 1000, status))

    def stop(self) -> None:
        self._stop.set()


def _outcomes_per_second(system: BenchSystem, first: int, last: int) -> list[dict]:
    rows = []
    for second in range(first, last + 1):
        counts = {k.decode(): int(v) for k, v in system.redis.hgetall(stats_key(second)).items()}
        rows.append({"second": second - first, **{o: counts.get(o, 0) for o in OUTCOMES}})
    return rows


def _orders(system: BenchSystem) -> dict[str, int]:
    with system.engine.connect() as connection:
        rows = connection.execute(text("SELECT status, count(*) FROM orders GROUP BY status")).all()
    return {status: count for status, count in rows}


def chart_redis_maxmemory_mb(values: Path = CHART_VALUES) -> int:
    """The in-chart Redis's maxmemory with the chart's default values, as its template derives
    it: redis.capacity's orders x bytes per order, rounded up to a whole MiB, plus its base."""
    capacity = yaml.safe_load(values.read_text())["redis"]["capacity"]
    return capacity["baseMiB"] - (-capacity["orders"] * capacity["bytesPerOrder"] // 2**20)


def run_drop(system: BenchSystem, requests: int, clients: int) -> dict:
    probe = Probe(system.url)
    started = time.perf_counter()
    started_epoch = int(time.time())
    prober = threading.Thread(target=probe.run, args=(started,))
    prober.start()
    try:
        wrk = run_wrk(system.url, 300, 64, 2, clients, requests=requests)
    finally:
        probe.stop()
        prober.join()
    ended = time.perf_counter()
    statuses = dict(wrk["statuses"])
    for *_, status in probe.samples:
        statuses[status] = statuses.get(status, 0) + 1
    while system.redis.zcard(ADMITTED_KEY) or sum(_orders(system).values()) < statuses.get(202, 0):
        if time.perf_counter() - ended > DECIDED_WITHIN_SECONDS:
            break
        time.sleep(0.05)
    terminal_after = time.perf_counter() - ended
    time.sleep(1.5)  # the API flushes its per-second counts once a second
    return {
        "durability": system.durability(),
        "requests": wrk["requests"],
        "seconds": round(wrk["duration_us"] / 1e6, 2),
        "requests_per_second": round(wrk["requests_per_second"]),
        "p50_ms": round(wrk["p50_us"] / 1000, 1),
        "p99_ms": round(wrk["p99_us"] / 1000, 1),
        "statuses": statuses,
        "socket_errors": wrk["socket_errors"],
        "orders": _orders(system),
        "terminal_after_seconds": round(terminal_after, 2),
        "probe": probe.samples,
        "per_second": _outcomes_per_second(system, started_epoch, int(time.time())),
    }


def judge(run: dict, stock: int, verdict: Verdict) -> None:
    where = run_with(run["durability"])
    answers = ", ".join(f"{n:,} x {status}" for status, n in sorted(run["statuses"].items()))
    confirmed, admitted = run["orders"].get("confirmed", 0), run["statuses"].get(202, 0)
    verdict.check("confirmed", confirmed - stock, where, f"{confirmed:,} confirmed of {stock:,}")
    orders = ", ".join(f"{n:,} {status}" for status, n in sorted(run["orders"].items()))
    verdict.check("undecided", admitted - sum(run["orders"].values()), where, f"{admitted:,} 202s; {orders}")
    verdict.check("terminal", run["terminal_after_seconds"], where)
    rate = f"{run['requests_per_second']:,} req/s"
    verdict.check("p99", run["p99_ms"], where, f"{run['requests']:,} requests in {run['seconds']} s ({rate})")
    errors = sum(n for status, n in run["statuses"].items() if status >= 500) + run["socket_errors"]
    verdict.check("errors", errors, where, f"answers, the probe's with them: {answers}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.drop", description=__doc__.splitlines()[0])
    parser.add_argument("--stock", type=int, default=5_000)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--big-stock", type=int, default=100_000, help="units of the drop on the chart's Redis (0: skip it)"
    )
    add_options(parser)
    args = parser.parse_args(argv)
    from bench.plots import plot_drop  # matplotlib: the bench extra, not needed by the tests

    verdict = Verdict("drop", TARGETS, args.target)
    runs = []
    for appendfsync in APPENDFSYNC:
        with running_system(workers=args.workers, stock=args.stock, appendfsync=appendfsync) as system:
            runs.append({"name": appendfsync, **run_drop(system, args.requests, args.clients)})
        judge(runs[-1], args.stock, verdict)
    if args.big_stock:
        chart_redis = ("--maxmemory", f"{chart_redis_maxmemory_mb()}mb")
        with running_system(args.workers, "always", args.big_stock, redis_options=chart_redis) as system:
            runs.append({"name": "chart-redis", **run_drop(system, 3 * args.big_stock, BIG_DROP_CLIENTS)})
        judge(runs[-1], args.big_stock, verdict)
    figures = {"stock": args.stock, "big_stock": args.big_stock, "runs": runs}
    exit_code = verdict.finish(figures, args.publish)
    for saved in verdict.saved:
        for run in runs:
            plot = saved.with_name(f"{saved.stem}-{run['name']}.png")
            plot_drop(run, plot)
            print(f"written: {shown(plot)}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
