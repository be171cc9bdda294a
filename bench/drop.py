"""The mixed drop: a sale of 5,000 units met by 200,000 requests from 20,000 clients.

    python -m bench.drop                 # part of `make bench`
    python -m bench.drop --requests 50000 --stock 2000

On a running_system (two API processes, two workers, throwaway Redis and PostgreSQL), wrk
(``-t2 -c64``) sends ``--requests`` ``POST /buy {}`` spread over ``--clients`` addresses,
while a probe buyer (20 requests/s, a new address each) times single requests: latency over
time. Afterwards it waits until every 202 is decided in PostgreSQL and checks the outcome:
exactly ``--stock`` confirmed, as many orders as 202s, every order terminal within 5 s of the
last request. Throughput by outcome per second comes from the API's own per-second counts
(``fs:stats:<second>``, what the dashboard shows). It prints the figures, writes JSON and a
PNG plot to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx
from sqlalchemy import text

from bench.saved import save_json
from bench.system import BenchSystem, running_system
from bench.wrk import run_wrk
from service.sale_stats import OUTCOMES, stats_key
from service.settings import REPO_ROOT
from service.throwaway import wait_until
from worker.queue import ADMITTED_KEY

TERMINAL_WITHIN_SECONDS = 5.0
P99_TARGET_MS = 50.0
PROBE_PER_SECOND = 20


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
    admitted = wrk["statuses"].get(202, 0) + sum(1 for *_, status in probe.samples if status == 202)

    def all_decided() -> bool:
        return system.redis.zcard(ADMITTED_KEY) == 0 and sum(_orders(system).values()) == admitted

    wait_until(all_decided, 120, f"{admitted} admitted orders decided", interval=0.05)
    terminal_after = time.perf_counter() - ended
    time.sleep(1.5)  # the API flushes its per-second counts once a second
    return {
        "requests": wrk["requests"],
        "seconds": round(wrk["duration_us"] / 1e6, 2),
        "requests_per_second": round(wrk["requests_per_second"], 1),
        "p50_ms": wrk["p50_us"] / 1000,
        "p99_ms": wrk["p99_us"] / 1000,
        "statuses": wrk["statuses"],
        "socket_errors": wrk["socket_errors"],
        "admitted": admitted,
        "orders": _orders(system),
        "terminal_after_seconds": round(terminal_after, 2),
        "probe": probe.samples,
        "per_second": _outcomes_per_second(system, started_epoch, int(time.time())),
    }


def verdict(result: dict, stock: int) -> list[str]:
    missed = []
    confirmed = result["orders"].get("confirmed", 0)
    if confirmed != stock:
        missed.append(f"{confirmed} confirmed, not exactly {stock}")
    if sum(result["orders"].values()) != result["admitted"]:
        missed.append(f"{sum(result['orders'].values())} orders for {result['admitted']} 202s")
    if result["terminal_after_seconds"] > TERMINAL_WITHIN_SECONDS:
        missed.append(f"last order terminal {result['terminal_after_seconds']} s after the load")
    if result["p99_ms"] > P99_TARGET_MS:
        missed.append(f"p99 {result['p99_ms']:.1f} ms > {P99_TARGET_MS:g}")
    return missed


def report(result: dict) -> None:
    statuses = result["statuses"]
    print(f"requests           {result['requests']:>10,}  in {result['seconds']} s")
    print(f"requests/s         {result['requests_per_second']:>10,.0f}")
    print(f"latency p50/p99 ms {result['p50_ms']:>6.1f} / {result['p99_ms']:.1f}")
    print("answers            " + ", ".join(f"{s}: {n:,}" for s, n in sorted(statuses.items())))
    print("orders             " + ", ".join(f"{s}: {n:,}" for s, n in sorted(result["orders"].items())))
    print(f"all terminal       {result['terminal_after_seconds']:>10.2f} s after the last request")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.drop", description=__doc__.splitlines()[0])
    parser.add_argument("--stock", type=int, default=5_000)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    with running_system(workers=args.workers, stock=args.stock) as system:
        result = run_drop(system, args.requests, args.clients)
    report(result)
    saved = save_json("drop", result)
    from bench.plots import plot_drop  # matplotlib: the bench extra, not needed by the tests

    plot_drop(result, saved.with_suffix(".png"))
    print(f"written: {saved.with_suffix('.png').relative_to(REPO_ROOT)}")
    missed = verdict(result, args.stock)
    if missed:
        print("targets not met: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
