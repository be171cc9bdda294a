"""Memory over a sale: Redis bytes per limiter bucket and per finished order, the keys that
must expire, and the API processes' resident memory over a run of several minutes.

    python -m bench.memory               # part of `make bench`: 5 minutes
    python -m bench.memory --minutes 1

On a running_system (two API processes, two workers), every minute the demo product is
restocked with 5,000 units (admin API) and wrk (``-t2 -c16``) sends ``POST /buy {}`` from
200,000 rotating client addresses for the rest of the minute: sales, sell-outs, rate limits
and a deny cache that keeps filling and evicting. RSS of both API processes is sampled every
5 s; the verdict compares the last minute with the first (after warm-up): flat means within
±10 %. Afterwards every order must be decided, and the Redis figures are read with
``MEMORY USAGE`` over samples of each kind of key, TTLs included.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

import httpx
from redis import Redis

from bench.saved import save_json
from bench.system import ADMIN_TOKEN, BenchSystem, running_system
from bench.wrk import run_wrk
from service.throwaway import wait_until
from worker.queue import ADMITTED_KEY, RESULT_TTL_SECONDS, pending_key

RESTOCK_UNITS = 5_000
SAMPLE_EVERY_SECONDS = 5
RSS_TOLERANCE = 0.10
KEY_SAMPLE = 500
BUCKET_PROBES = 50


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def _sample_rss(system: BenchSystem, stop: threading.Event, samples: list) -> None:
    pids = system.api_pids()
    began = time.monotonic()
    while not stop.wait(SAMPLE_EVERY_SECONDS):
        samples.append((round(time.monotonic() - began), [rss_bytes(pid) for pid in pids]))


def restock(system: BenchSystem, units: int = RESTOCK_UNITS) -> None:
    response = httpx.post(
        f"{system.url}/admin/products/1/restock",
        json={"units": units},
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    response.raise_for_status()


def _key_figures(redis: Redis, pattern: str) -> dict:
    """How many keys match, their mean MEMORY USAGE and TTL range over a sample."""
    keys = list(redis.scan_iter(match=pattern, count=1000))
    sample = keys[:KEY_SAMPLE]
    sizes = [redis.memory_usage(key) or 0 for key in sample]
    ttls = [redis.pttl(key) for key in sample]
    return {
        "keys": len(keys),
        "mean_bytes": round(statistics.mean(sizes)) if sizes else 0,
        "ttl_ms_min": min(ttls, default=None),
        "ttl_ms_max": max(ttls, default=None),
        "without_ttl": sum(1 for ttl in ttls if ttl < 0),
    }


def _fresh_bucket_figures(system: BenchSystem) -> dict:
    """Buckets live only until they are full again (a second for a client that spent one of
    five tokens), so the load's are gone by now: make BUCKET_PROBES and measure them at once."""
    restock(system, BUCKET_PROBES)
    with httpx.Client(timeout=10) as client:
        for n in range(BUCKET_PROBES):
            headers = {"x-forwarded-for": f"192.168.{n // 256}.{n % 256}"}
            client.post(f"{system.url}/buy", json={}, headers=headers).raise_for_status()
    return _key_figures(system.redis, "fs:rl:*")


def run_memory(system: BenchSystem, minutes: int) -> dict:
    samples: list = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_rss, args=(system, stop, samples))
    sampler.start()
    statuses: dict[int, int] = {}
    try:
        for _ in range(minutes):
            restock(system)
            wrk = run_wrk(system.url, 58, 16, 2, 200_000)
            for status, count in wrk["statuses"].items():
                statuses[status] = statuses.get(status, 0) + count
    finally:
        stop.set()
        sampler.join()
    wait_until(lambda: system.redis.zcard(ADMITTED_KEY) == 0, 120, "every order decided", interval=0.2)
    buckets = _fresh_bucket_figures(system)
    jobs = _key_figures(system.redis, "rq:job:order-*")
    # An idle bucket lives until it would be full again: capacity / refill, 5 s by default.
    idle_after = max(buckets["ttl_ms_max"] or 0, 0) / 1000 + 1
    time.sleep(idle_after)
    buckets_left = sum(1 for _ in system.redis.scan_iter(match="fs:rl:*", count=1000))
    return {
        "minutes": minutes,
        "statuses": statuses,
        "rss": samples,
        "buckets": buckets,
        "buckets_left_after_idle_seconds": [round(idle_after, 1), buckets_left],
        "finished_order_jobs": jobs,
        "pending_left": system.redis.llen(pending_key(1)),
        "redis_used_memory": system.redis.info("memory")["used_memory"],
    }


def rss_change(result: dict) -> list[float]:
    """Per API process: the last minute's mean RSS relative to the first minute's."""
    per_minute = 60 // SAMPLE_EVERY_SECONDS
    first = result["rss"][:per_minute]
    last = result["rss"][-per_minute:]
    changes = []
    for i in range(len(result["rss"][0][1])):
        before = statistics.mean(sample[1][i] for sample in first)
        after = statistics.mean(sample[1][i] for sample in last)
        changes.append(round(after / before - 1, 3))
    return changes


def report(result: dict) -> list[str]:
    missed = []
    answers = ", ".join(f"{s}: {n:,}" for s, n in sorted(result["statuses"].items()))
    print(f"answers over {result['minutes']} min: {answers}")
    b, j = result["buckets"], result["finished_order_jobs"]
    print(f"limiter bucket   {b['mean_bytes']:>6} B each  ({b['keys']:,} live, TTL ≤ {b['ttl_ms_max']} ms)")
    print(
        f"finished order   {j['mean_bytes']:>6} B each  (its RQ job hash; {j['keys']:,} kept,"
        f" TTL ≤ {RESULT_TTL_SECONDS} s)"
    )
    idle, left = result["buckets_left_after_idle_seconds"]
    print(f"buckets left {idle} s after the load: {left}; pending orders left: {result['pending_left']}")
    if b["without_ttl"] or j["without_ttl"]:
        missed.append(f"keys without a TTL: {b['without_ttl']} buckets, {j['without_ttl']} jobs")
    if left:
        missed.append(f"{left} idle buckets did not expire")
    if j["ttl_ms_max"] is not None and j["ttl_ms_max"] > RESULT_TTL_SECONDS * 1000:
        missed.append("a finished job outlives its result TTL")
    if len(result["rss"]) * SAMPLE_EVERY_SECONDS >= 120:
        changes = rss_change(result)
        mib = [round(rss / 2**20) for rss in result["rss"][-1][1]]
        print(f"API RSS last vs first minute: {', '.join(f'{c:+.1%}' for c in changes)} (now {mib} MiB)")
        missed += [f"API RSS changed {c:+.1%}" for c in changes if abs(c) > RSS_TOLERANCE]
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=5)
    args = parser.parse_args(argv)
    with running_system(workers=2, stock=0) as system:
        result = run_memory(system, args.minutes)
    missed = report(result)
    save_json("memory", result)
    if missed:
        print("targets not met: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
