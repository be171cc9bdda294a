"""The request paths of a sale, each next to its floor, on two API processes.

    python -m bench.paths                  # what `make bench` runs first: 10 s per measurement
    python -m bench.paths --quick --check bench/baseline.json   # `make bench-quick` (CI)

On throwaway Redis and PostgreSQL it starts ``flashsale api --processes 2`` (two uvicorn
processes on one port; no workers, so none competes for the cores), then measures with
wrk (Debian's ``wrk``; ``-t2 -c64``, keep-alive) each scenario right after its floor,
``GET /healthz`` on the same processes (a trivial route with no Redis call), three times
over; the median of the three rounds is reported:

  limited    POST /buy from one client already over its limit (429, from the deny cache;
             the few 202s are its bucket refilling, 1 token/s)
  sold_out   POST /buy with the gate at zero, 20,000 clients (409, from the latch)
  admit      POST /buy with stock to spare, 200,000 clients (202, one admit.lua call each)

Absolute figures drift on shared machines; the ratio to the floor is what to compare. It
prints a table against the issue's targets, writes JSON to ``bench/results/``, and with
``--check`` fails when a ratio falls more than 30 % below the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import httpx
from redis import Redis

from bench.saved import save_json
from bench.system import running_system
from bench.wrk import run_wrk
from service.stock_gate import set_gate

REGRESSION_TOLERANCE = 0.3
CONNECTIONS, THREADS = 64, 2
ROUNDS = 3
"""Floor-then-scenario pairs per scenario; the median pair is reported (shared machines drift)."""
# scenario: (minimum ratio to the floor or None, minimum req/s or None, maximum p99 ms)
TARGETS = {"limited": (0.8, None, 20.0), "sold_out": (0.8, None, 20.0), "admit": (None, 6_500.0, 50.0)}


def _figures(wrk: dict) -> dict:
    return {
        "requests_per_second": round(wrk["requests_per_second"], 1),
        "p50_ms": wrk["p50_us"] / 1000,
        "p99_ms": wrk["p99_us"] / 1000,
        "statuses": wrk["statuses"],
        "socket_errors": wrk["socket_errors"],
    }


def measure(url: str, redis: Redis, seconds: int) -> dict[str, dict]:
    """Each scenario right after its floor, ROUNDS times; the median round's figures and ratio."""

    def load(clients: int, method: str = "POST", path: str = "/buy") -> dict:
        return _figures(run_wrk(url, seconds, CONNECTIONS, THREADS, clients, method, path))

    def limited() -> dict:
        for _ in range(10):  # spend the one client's bucket: every later request is a 429
            httpx.post(f"{url}/buy", json={}, timeout=5)
        return load(clients=0)

    def sold_out() -> dict:
        set_gate(redis, 1, 0)
        return load(clients=20_000)

    def admit() -> dict:
        set_gate(redis, 1, 10**9)
        return load(clients=200_000)

    def floor() -> dict:
        return load(clients=0, method="GET", path="/healthz")

    floor()  # warm-up: the first seconds of fresh processes are slower
    results = {}
    scenarios = (("limited", limited, 429), ("sold_out", sold_out, 409), ("admit", admit, 202))
    for name, run, expected in scenarios:
        pairs = []
        for _ in range(ROUNDS):
            base, figures = floor(), run()
            figures["ratio"] = round(figures["requests_per_second"] / base["requests_per_second"], 3)
            pairs.append((figures, base))
        pairs.sort(key=lambda pair: pair[0]["ratio"])
        figures, base = pairs[len(pairs) // 2]  # the median round: its figures and its floor
        unexpected = {s: n for s, n in figures["statuses"].items() if s != expected}
        rounds = [pair[0]["ratio"] for pair in pairs]
        results[name] = {**figures, "floor": base, "unexpected_statuses": unexpected, "round_ratios": rounds}
    return results


def report(results: dict[str, dict]) -> list[str]:
    """Print the table; return the targets missed."""
    missed = []
    print(f"{'scenario':<10} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'floor':>8} {'ratio':>6}  target")
    for name, r in results.items():
        least_ratio, least_rate, most_p99 = TARGETS[name]
        wanted = []
        if least_ratio is not None:
            wanted.append(f">= {least_ratio} x floor")
            if r["ratio"] < least_ratio:
                missed.append(f"{name}: ratio {r['ratio']} < {least_ratio}")
        if least_rate is not None:
            wanted.append(f">= {least_rate:,.0f} req/s")
            if r["requests_per_second"] < least_rate:
                missed.append(f"{name}: {r['requests_per_second']:,.0f} req/s < {least_rate:,.0f}")
        wanted.append(f"p99 <= {most_p99:g} ms")
        if r["p99_ms"] > most_p99:
            missed.append(f"{name}: p99 {r['p99_ms']:.1f} ms > {most_p99:g}")
        print(
            f"{name:<10} {r['requests_per_second']:>8,.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f}"
            f" {r['floor']['requests_per_second']:>8,.0f} {r['ratio']:>6.2f}  {', '.join(wanted)}"
        )
        if r["unexpected_statuses"] or r["socket_errors"]:
            print(f"  other answers {r['unexpected_statuses']}, socket errors {r['socket_errors']}")
    return missed


def regressions(results: dict[str, dict], baseline: dict[str, dict]) -> list[str]:
    """Scenarios whose ratio to the floor fell more than REGRESSION_TOLERANCE below the baseline's."""
    return [
        f"{name}: ratio {results[name]['ratio']} < {1 - REGRESSION_TOLERANCE:.0%} of {base['ratio']}"
        for name, base in baseline.items()
        if name in results and results[name]["ratio"] < (1 - REGRESSION_TOLERANCE) * base["ratio"]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.paths", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per measurement instead of 10")
    parser.add_argument("--check", type=Path, help="a baseline JSON: fail on a ratio 30 %% below it")
    parser.add_argument("--save-baseline", type=Path, help="write this run's ratios as the baseline")
    args = parser.parse_args(argv)
    with running_system(workers=0) as system:
        results = measure(system.url, system.redis, seconds=3 if args.quick else 10)
    missed = report(results)
    save_json("paths", {"machine": os.uname().nodename, "cpus": os.cpu_count(), **results})
    if missed:
        print("targets not met: " + "; ".join(missed))
    if args.save_baseline:
        ratios = {name: {"ratio": r["ratio"]} for name, r in results.items()}
        args.save_baseline.write_text(json.dumps(ratios, indent=2) + "\n")
    if args.check:
        failed = regressions(results, json.loads(args.check.read_text()))
        if failed:
            print("regressed: " + "; ".join(failed))
            return 1
        print(f"no ratio more than {REGRESSION_TOLERANCE:.0%} below {args.check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
