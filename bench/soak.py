"""The soak: a sale held for ten minutes at about 70 % of the admit path's maximum, with a
fault every minute, and what must be true afterwards.

    python -m bench.soak                   # `make soak`: 10 minutes, then up to 12 for TTLs
    python -m bench.soak --minutes 2 --rate 3000

On a running_system (two API processes, two workers, Redis with its AOF synced every second,
PostgreSQL with fsync on), every minute the demo product is restocked with 5,000 units and
wrk sends ``POST /buy {}`` from 20,000 client addresses at the chosen rate (paced per
connection) for 55 s. Twenty seconds into each minute one fault strikes, in turn: a worker
SIGKILLed (and replaced), Redis restarted, an API process SIGKILLed (uvicorn's supervisor
starts another), PostgreSQL restarted, Redis paused for 3 s (``CLIENT PAUSE``: every command
hangs, as when the network to it is cut).

Afterwards: every admitted order decided (``fs:admitted`` empty, no dead letters), at least
one order row per 202, units conserved (confirmed + stock left = units restocked, so
confirmed never exceeds the stock), the gate agrees with PostgreSQL; no 5xx outside a fault's
window (the fault, then ``RECOVERY_GRACE_SECONDS``) and socket errors only when an API
process died; API and worker RSS flat (±10 %, each process's last minute against its
second, for every process that lived four minutes or more); Redis back to its memory from
before the load once the finished jobs' TTL has passed.

The rate defaults to 70 % of the admit figure with appendfsync everysec (what the soak's Redis
runs with) of the newest ``bench/results/paths-*.json`` (``python -m bench.paths``), or of the
6,500 req/s target when there is none.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field

from rq.registry import FailedJobRegistry
from sqlalchemy import text

from bench.memory import SAMPLE_EVERY_SECONDS, restock, rss_bytes
from bench.saved import RESULTS, save_json
from bench.system import BenchSystem, running_system
from bench.wrk import run_wrk
from service.cli.dev_servers import wait_until
from service.core.keys import ADMITTED_KEY, gate_key
from service.sale.order_jobs import order_queue

LOAD_SHARE = 0.7
FALLBACK_ADMIT_RATE = 6_500
CONNECTIONS, THREADS, CLIENTS = 64, 2, 20_000
LOAD_SECONDS_PER_MINUTE = 55
FAULT_AT_SECONDS = 20
EXPECTED_LATENCY_MS = 2
"""Subtracted from each connection's pause so the paced rate lands near the one asked for."""
RESTOCK_UNITS = 5_000
REDIS_PAUSE_SECONDS = 3
RECOVERY_GRACE_SECONDS = 5
RSS_TOLERANCE = 0.10
REDIS_MEMORY_SLACK_BYTES = 2 << 20
"""Above the baseline, Redis's own tables may keep this much after the load's peak (their
shrinking is lazy): "back" is within it, against a peak of a hundred MiB or more."""
FAULTS = ("worker_killed", "redis_restarted", "api_killed", "postgres_restarted", "redis_paused")


@dataclass
class FaultWindow:
    fault: str
    started: float
    ended: float = 0.0

    def covers(self, second: int) -> bool:
        return int(self.started) <= second <= self.ended + RECOVERY_GRACE_SECONDS


def _inject(system: BenchSystem, fault: str) -> FaultWindow:
    window = FaultWindow(fault, time.time())
    if fault == "worker_killed":
        victim = next(worker for worker in system.workers if worker.poll() is None)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        system.start_worker()
    elif fault == "redis_restarted":
        system.redis_server.restart()
    elif fault == "api_killed":
        os.kill(system.api_pids()[0], signal.SIGKILL)
        wait_until(lambda: len(system.api_pids()) == 2, 60, "uvicorn to replace the API process")
    elif fault == "postgres_restarted":
        system.postgres_server.restart()
    else:
        system.redis.execute_command("CLIENT", "PAUSE", REDIS_PAUSE_SECONDS * 1000, "ALL")
        time.sleep(REDIS_PAUSE_SECONDS)  # the pause's own length: Redis lifts it by itself
    window.ended = time.time()
    return window


WARM_UP_SECONDS = 60
"""A process's first minute is its warm-up (pools and caches filling, the first batches'
peaks): its second minute is what its last minute is compared with."""
LONGEST_LIVED_SECONDS = 4 * 60
"""Only processes that lived this long are judged: a fault's replacement may start late."""


@dataclass
class Samples:
    """Resident memory of every API and worker process, every SAMPLE_EVERY_SECONDS."""

    rows: list[tuple[float, str, int]] = field(default_factory=list)
    """(time, process label ``api <pid>`` or ``worker <pid>``, RSS bytes)."""

    def take(self, system: BenchSystem) -> None:
        processes = [("api", pid) for pid in system.api_pids()]
        processes += [("worker", worker.pid) for worker in system.workers if worker.poll() is None]
        for role, pid in processes:
            try:
                self.rows.append((time.time(), f"{role} {pid}", rss_bytes(pid)))
            except (FileNotFoundError, ProcessLookupError, StopIteration):
                continue  # it died between the listing and the read: a fault's victim

    def changes(self) -> dict[str, float]:
        """Per process that lived LONGEST_LIVED_SECONDS: its last minute's mean RSS relative to
        its second minute's."""
        lives: dict[str, list[tuple[float, int]]] = {}
        for at, label, rss in self.rows:
            lives.setdefault(label, []).append((at, rss))
        changes = {}
        for label, life in lives.items():
            born, died = life[0][0], life[-1][0]
            if died - born < LONGEST_LIVED_SECONDS:
                continue
            settled = [rss for at, rss in life if born + WARM_UP_SECONDS <= at < born + 2 * WARM_UP_SECONDS]
            last = [rss for at, rss in life if at > died - 60]
            changes[label] = round(statistics.mean(last) / statistics.mean(settled) - 1, 3)
        return changes

    def series(self) -> dict[str, list[tuple[int, float]]]:
        """Per process: (seconds since the first sample, MiB), for the results file."""
        began = self.rows[0][0] if self.rows else 0.0
        series: dict[str, list[tuple[int, float]]] = {}
        for at, label, rss in self.rows:
            series.setdefault(label, []).append((round(at - began), round(rss / 2**20, 1)))
        return series


def _redis_footprint(system: BenchSystem) -> dict[str, int]:
    memory = system.redis.info("memory")
    return {
        "keys": system.redis.dbsize(),
        "used_memory": memory["used_memory"],
        "peak": memory["used_memory_peak"],
    }


def default_rate() -> int:
    newest = max(RESULTS.glob("paths-*.json"), default=None, key=lambda path: path.stat().st_mtime)
    if newest is None:
        return round(FALLBACK_ADMIT_RATE * LOAD_SHARE)
    admit = next(
        scenario["requests_per_second"]
        for scenario in json.loads(newest.read_text())["figures"]["scenarios"]
        if scenario["scenario"] == "admit" and scenario["durability"]["redis"]["appendfsync"] == "everysec"
    )
    return round(admit * LOAD_SHARE)


def run_soak(system: BenchSystem, minutes: int, rate: int, settle_seconds: float) -> dict:
    baseline = _redis_footprint(system)
    delay_ms = max(0, round(CONNECTIONS * 1000 / rate - EXPECTED_LATENCY_MS))
    samples, stop = Samples(), threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_EVERY_SECONDS):
            samples.take(system)

    sampler = threading.Thread(target=sample, daemon=True)
    samples.take(system)
    sampler.start()
    rounds, windows, restocked = [], [], 0
    try:
        for minute in range(minutes):
            restock(system, RESTOCK_UNITS)
            restocked += RESTOCK_UNITS
            fault = FAULTS[minute % len(FAULTS)]
            timer = threading.Timer(FAULT_AT_SECONDS, lambda f=fault: windows.append(_inject(system, f)))
            timer.start()
            wrk = run_wrk(
                system.url, LOAD_SECONDS_PER_MINUTE, CONNECTIONS, THREADS, CLIENTS, delay_ms=delay_ms
            )
            timer.join()
            rounds.append({"minute": minute + 1, "fault": fault, **wrk})
            print(
                f"minute {minute + 1:>2}  {fault:<18} {wrk['requests_per_second']:>7,.0f} req/s"
                f"  p99 {wrk['p99_us'] / 1000:>6.1f} ms  {dict(sorted(wrk['statuses'].items()))}"
                f"  socket errors {wrk['socket_errors']}",
                flush=True,
            )
    finally:
        stop.set()
        sampler.join()
    settled_at = time.monotonic()
    wait_until(
        lambda: system.redis.zcard(ADMITTED_KEY) == 0, 300, "every admitted order decided", interval=0.5
    )
    decided_after = time.monotonic() - settled_at
    with system.engine.connect() as connection:
        rows, confirmed, undecided = connection.execute(
            text(
                "SELECT count(*), coalesce(sum(quantity) FILTER (WHERE status = 'confirmed'), 0),"
                " count(*) FILTER (WHERE status NOT IN ('confirmed', 'rejected')) FROM orders"
            )
        ).one()
        stock = connection.execute(text("SELECT stock FROM products WHERE id = 1")).scalar_one()

    def gate_agrees() -> bool:
        gate = system.redis.get(gate_key(1))
        return gate is not None and int(gate) == stock

    gate_agreed = _eventually(gate_agrees, 30, "the gate to agree with PostgreSQL")
    footprint_waited = time.monotonic()
    back = _eventually(
        lambda: _redis_back(_redis_footprint(system), baseline), settle_seconds, "Redis", interval=5
    )
    return {
        "minutes": minutes,
        "rate_asked": rate,
        "rounds": rounds,
        "windows": [vars(window) for window in windows],
        "restocked": restocked,
        "order_rows": rows,
        "confirmed_units": confirmed,
        "undecided_rows": undecided,
        "stock_left": stock,
        "dead_letters": FailedJobRegistry(queue=order_queue(system.redis)).count,
        "decided_seconds_after_load": round(decided_after, 1),
        "gate_agrees": gate_agreed,
        "rss_change": samples.changes(),
        "rss_mib": samples.series(),
        "redis_before": baseline,
        "redis_after": _redis_footprint(system),
        "redis_back": back,
        "redis_back_after_seconds": round(time.monotonic() - footprint_waited),
    }


def _eventually(predicate, timeout: float, what: str, interval: float = 0.5) -> bool:
    """``wait_until``, as a yes or no for the verdict."""
    try:
        wait_until(predicate, timeout, what, interval)
    except TimeoutError:
        return False
    return True


def _redis_back(now: dict[str, int], before: dict[str, int]) -> bool:
    """Memory, not key count: RQ and the workers keep a few short-lived locks and markers."""
    return now["used_memory"] <= before["used_memory"] + REDIS_MEMORY_SLACK_BYTES


def verdict(result: dict) -> list[str]:
    """The promises the soak checks that did not hold."""
    missed = []
    windows = [FaultWindow(**window) for window in result["windows"]]
    if len(windows) != len(result["rounds"]):  # an injection raised (its traceback is above)
        missed.append(f"{len(result['rounds']) - len(windows)} faults were not injected")
    for round_ in result["rounds"]:
        outside = {
            s: n for s, n in round_["server_errors_at"].items() if not any(w.covers(s) for w in windows)
        }
        if outside:
            missed.append(f"minute {round_['minute']}: 5xx outside the fault window: {outside}")
        if round_["socket_errors"] and round_["fault"] != "api_killed":
            missed.append(f"minute {round_['minute']}: {round_['socket_errors']} socket errors, no API died")
    answered_yes = sum(round_["statuses"].get(202, 0) for round_ in result["rounds"])
    if result["order_rows"] < answered_yes:
        missed.append(f"{answered_yes} answers 202 but only {result['order_rows']} orders")
    if result["undecided_rows"] or result["dead_letters"]:
        missed.append(f"{result['undecided_rows']} undecided orders, {result['dead_letters']} dead letters")
    if result["confirmed_units"] + result["stock_left"] != result["restocked"] or result["stock_left"] < 0:
        missed.append(
            f"units not conserved: {result['confirmed_units']} confirmed + {result['stock_left']} left"
            f" != {result['restocked']} restocked"
        )
    if not result["gate_agrees"]:
        missed.append("the stock gate disagrees with PostgreSQL")
    missed += [
        f"RSS of {name} changed {c:+.1%}"
        for name, c in result["rss_change"].items()
        if abs(c) > RSS_TOLERANCE
    ]
    if not result["redis_back"]:
        missed.append(f"Redis not back: {result['redis_after']} after, {result['redis_before']} before")
    return missed


def report(result: dict) -> None:
    answers: dict[int, int] = {}
    for round_ in result["rounds"]:
        for status, count in round_["statuses"].items():
            answers[status] = answers.get(status, 0) + count
    total = sum(answers.values())
    seconds = len(result["rounds"]) * LOAD_SECONDS_PER_MINUTE
    print(
        f"{total:,} answers in {result['minutes']} min"
        f" ({total / seconds:,.0f} req/s, asked {result['rate_asked']:,})"
    )
    print(f"answers: {dict(sorted(answers.items()))}")
    for window in result["windows"]:
        print(f"  {window['fault']:<18} took {window['ended'] - window['started']:.1f} s")
    print(
        f"orders: {result['order_rows']:,} rows, {result['confirmed_units']:,} units confirmed of"
        f" {result['restocked']:,} restocked, {result['stock_left']:,} left; all decided"
        f" {result['decided_seconds_after_load']} s after the load; dead letters {result['dead_letters']}"
    )
    changes = ", ".join(f"{name} {c:+.1%}" for name, c in result["rss_change"].items())
    print(f"RSS, last minute vs second, of each process living {LONGEST_LIVED_SECONDS // 60}+ min: {changes}")
    before, after = result["redis_before"], result["redis_after"]
    print(
        f"Redis used memory {before['used_memory'] / 2**20:.1f} MiB before, peak {after['peak'] / 2**20:.1f},"
        f" {after['used_memory'] / 2**20:.1f} after ({'back' if result['redis_back'] else 'NOT back'}"
        f" {result['redis_back_after_seconds']} s after the load);"
        f" keys {before['keys']} before, {after['keys']} after"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--rate", type=int, default=None, help="requests per second (default: see above)")
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=120,
        help="how long Redis memory may take to come back (default 2 min: a decided order leaves at once)",
    )
    args = parser.parse_args(argv)
    rate = args.rate or default_rate()
    with running_system(workers=2, stock=0, appendfsync="everysec") as system:
        result = run_soak(system, args.minutes, rate, args.settle_seconds)
    report(result)
    missed = verdict(result)
    save_json("soak", result)
    if missed:
        print("promises broken: " + "; ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
