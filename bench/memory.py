"""Memory over a sale: Redis bytes per queued order and per decided order, per limiter
bucket, the keys that must expire, and the API processes' resident memory over a run of
several minutes.

    python -m bench.memory               # part of `make bench`: 5 minutes
    python -m bench.memory --minutes 1

First the queue (issue 17): with no worker running, QUEUED_ORDERS units are restocked and
sold by wrk; once the buyers' buckets have expired, Redis's ``used_memory`` over what it was
before, divided by the orders admitted, is the bytes per queued order. Then two workers
decide them all, and a minute later the same difference divided by the same orders is the
bytes per decided order (what a decided order leaves behind: nothing but the idempotency
record and per-customer count, which this load does not write), and no RQ job hash may be
left. Then RECORD_ORDERS more orders, admitted in-process through the production admission
with an Idempotency-Key and a customer id under a per-customer limit, and decided: what each
keeps (its idempotency record for 24 h, its customer's count for 30 days) is the **bytes
kept per order with both records**; with the bytes per queued order, the most an order holds
(the chart's ``redis.capacity.bytesPerOrder`` must cover it: tests/test_chart.py).

On a running_system (two API processes, two workers; Redis's AOF synced every second, so
that RQ's bookkeeping keeps up with the sales; PostgreSQL with fsync on), every minute the
demo product is restocked with 5,000 units (admin API) and wrk (``-t2 -c16``) sends
``POST /buy {}`` from 200,000 rotating client addresses for the rest of the minute: sales,
sell-outs, rate limits and a deny cache that keeps filling and evicting. RSS of both API
processes is sampled every 5 s; the verdict compares the last minute with the first (after
warm-up): flat means within ±10 % (a replaced process cannot be judged: it is counted).
Afterwards every order must be decided and its draining job finished, and the buckets are
read with ``MEMORY USAGE`` over a sample, TTLs included. It prints each of
TARGETS with what was measured, saves the figures, and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

import httpx
from redis import Redis
from rq.registry import StartedJobRegistry

from bench.system import ADMIN_TOKEN, BenchSystem, admit_in_process, run_with, running_system
from bench.verdict import AT_MOST, EXACTLY, Target, Verdict, add_options
from bench.wrk import run_wrk
from service.cli.dev_servers import wait_until
from service.core.keys import ADMITTED_KEY, pending_keys, sale_key
from service.sale.order_jobs import order_queue

RESTOCK_UNITS = 5_000
SAMPLE_EVERY_SECONDS = 5
KEY_SAMPLE = 500
BUCKET_PROBES = 50
QUEUED_ORDERS = 20_000
RECORD_ORDERS = 10_000
DECIDED_WAIT_SECONDS = 60

TARGETS = (
    Target("bucket_bytes", "Redis bytes per limiter bucket", None, source="#7"),
    Target("queued_bytes", "Redis bytes per queued order", AT_MOST, 400, "#17"),
    Target("decided_bytes", "Redis bytes per decided order, a minute after", AT_MOST, 50, "#17"),
    Target("jobs_left", "RQ job hashes left once every order is decided", EXACTLY, 0, "#17"),
    Target(
        "kept_bytes",
        "Redis bytes kept per decided order with an Idempotency-Key and a per-customer limit",
        None,
        source="#17",
    ),
    Target("peak_bytes", "Redis bytes per order at most: queued, with both records", None, source="#17"),
    Target("without_ttl", "bucket keys without a TTL", EXACTLY, 0, "#7"),
    Target("buckets_left", "idle buckets left once their TTL passed", EXACTLY, 0, "#7"),
    Target("replaced", "API processes replaced during the run (RSS flat cannot be judged)", EXACTLY, 0, "#7"),
    Target("rss", "API RSS, last minute against the first, largest change %", AT_MOST, 10, "#7"),
)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def _rss_while_alive(pid: int) -> int | None:
    """None once the process is gone: uvicorn's supervisor replaced it (it died, or missed the
    supervisor's health check)."""
    try:
        return rss_bytes(pid)
    except FileNotFoundError:
        return None


def _sample_rss(system: BenchSystem, stop: threading.Event, samples: list) -> None:
    pids = system.api_pids()
    began = time.monotonic()
    while not stop.wait(SAMPLE_EVERY_SECONDS):
        samples.append((round(time.monotonic() - began), [_rss_while_alive(pid) for pid in pids]))


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


def _used_memory(redis: Redis) -> int:
    return redis.info("memory")["used_memory"]


def _idle_buckets_gone(system: BenchSystem) -> None:
    """The load's buckets live until full again (5 s by default): wait them out."""
    wait_until(
        lambda: next(system.redis.scan_iter(match="fs:rl:*", count=1000), None) is None,
        60,
        "the buyers' buckets expired",
        interval=0.5,
    )


def _all_decided(system: BenchSystem) -> bool:
    queue = order_queue(system.redis)
    undecided = system.redis.zcard(ADMITTED_KEY)
    return not undecided and not queue.count and not StartedJobRegistry(queue=queue).count


def measure_queue(system: BenchSystem, orders: int = QUEUED_ORDERS, workers: int = 2) -> dict:
    """Bytes per queued and per decided order (no worker runs until the orders are queued)."""
    restock(system, orders)
    _idle_buckets_gone(system)
    before = _used_memory(system.redis)
    wrk = run_wrk(system.url, 30, 16, 2, 200_000, requests=orders * 2)
    _idle_buckets_gone(system)
    queued = system.redis.zcard(ADMITTED_KEY)
    with_queue = _used_memory(system.redis)
    began = time.monotonic()
    for _ in range(workers):
        system.start_worker()
    wait_until(lambda: _all_decided(system), 600, "every queued order decided", interval=0.2)
    drained_seconds = round(time.monotonic() - began, 1)
    time.sleep(DECIDED_WAIT_SECONDS)
    after = _used_memory(system.redis)
    return {
        "orders": queued,
        "statuses": wrk["statuses"],
        "used_memory": {"before": before, "queued": with_queue, "decided_a_minute_after": after},
        "queued_bytes": round((with_queue - before) / max(queued, 1)),
        "decided_bytes": round((after - before) / max(queued, 1)),
        "jobs_left": sum(1 for _ in system.redis.scan_iter(match="rq:job:*", count=1000)),
        "drained_seconds": drained_seconds,
    }


def measure_records(system: BenchSystem, orders: int = RECORD_ORDERS) -> dict:
    """Bytes kept per decided order with both of an order's records (the workers run)."""
    restock(system, orders)
    system.redis.hset(sale_key(1), "per_customer", 1)  # what PUT /admin/products/1 would publish
    before = _used_memory(system.redis)
    admit_in_process(system.env, orders, with_records=True)
    wait_until(lambda: _all_decided(system), 600, "every order with records decided", interval=0.2)
    kept = _used_memory(system.redis)
    system.redis.hset(sale_key(1), "per_customer", 0)
    return {
        "orders": orders,
        "used_memory": {"before": before, "decided": kept},
        "kept_bytes": round((kept - before) / orders),
    }


def run_memory(system: BenchSystem, minutes: int) -> dict:
    queue_figures = measure_queue(system)
    record_figures = measure_records(system)
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
    wait_until(lambda: _all_decided(system), 600, "every order decided and its job finished", interval=0.5)
    buckets = _fresh_bucket_figures(system)
    # An idle bucket lives until it would be full again: capacity / refill, 5 s by default.
    idle_after = max(buckets["ttl_ms_max"] or 0, 0) / 1000 + 1
    time.sleep(idle_after)
    buckets_left = sum(1 for _ in system.redis.scan_iter(match="fs:rl:*", count=1000))
    return {
        "durability": system.durability(),
        "minutes": minutes,
        "queue": queue_figures,
        "records": record_figures,
        "statuses": statuses,
        "rss": samples,
        "buckets": buckets,
        "buckets_left_after_idle_seconds": [round(idle_after, 1), buckets_left],
        "pending_left": sum(system.redis.llen(key) for key in pending_keys(1)),
        "redis_used_memory": system.redis.info("memory")["used_memory"],
    }


def rss_change(result: dict) -> list[float | None]:
    """Per API process: the last minute's mean RSS relative to the first minute's; None for
    one that was replaced."""
    per_minute = 60 // SAMPLE_EVERY_SECONDS
    first = result["rss"][:per_minute]
    last = result["rss"][-per_minute:]
    changes = []
    for i in range(len(result["rss"][0][1])):
        lives = [sample[1][i] for sample in result["rss"]]
        if None in lives:
            changes.append(None)
            continue
        before = statistics.mean(sample[1][i] for sample in first)
        after = statistics.mean(sample[1][i] for sample in last)
        changes.append(round(after / before - 1, 3))
    return changes


def judge(result: dict, verdict: Verdict) -> None:
    where = run_with(result["durability"])
    b, q = result["buckets"], result["queue"]
    answers = ", ".join(f"{n:,} x {s}" for s, n in sorted(result["statuses"].items()))
    verdict.check("bucket_bytes", b["mean_bytes"], where, f"{b['keys']:,} live, TTL ≤ {b['ttl_ms_max']} ms")
    orders = f"{q['orders']:,} orders queued with no worker running"
    verdict.check("queued_bytes", q["queued_bytes"], where, orders)
    detail = f"{DECIDED_WAIT_SECONDS} s after two workers decided them in {q['drained_seconds']} s"
    verdict.check("decided_bytes", q["decided_bytes"], where, detail)
    verdict.check("jobs_left", q["jobs_left"], where, f"pending orders left: {result['pending_left']}")
    kept = result["records"]["kept_bytes"]
    verdict.check(
        "kept_bytes", kept, where, f"{result['records']['orders']:,} orders, records kept 24 h / 30 days"
    )
    verdict.check("peak_bytes", q["queued_bytes"] + kept, where, f"{q['queued_bytes']} queued + {kept} kept")
    verdict.check("without_ttl", b["without_ttl"], where, f"of up to {KEY_SAMPLE}")
    idle, left = result["buckets_left_after_idle_seconds"]
    verdict.check("buckets_left", left, where, f"{idle} s after the load")
    if result["minutes"] >= 2:  # a first and a last minute
        changes = rss_change(result)
        lived = [c for c in changes if c is not None]
        verdict.check("replaced", len(changes) - len(lived), where, f"of {len(changes)}")
        if lived:
            mib = ", ".join(str(round(rss / 2**20)) for rss in result["rss"][-1][1] if rss is not None)
            each = ", ".join(f"{c:+.1%}" for c in lived)
            detail = f"{each} ({mib} MiB) over {result['minutes']} min: {answers}"
            verdict.check("rss", round(max(abs(c) for c in lived) * 100, 1), where, detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=5)
    add_options(parser)
    args = parser.parse_args(argv)
    verdict = Verdict("memory", TARGETS, args.target)
    with running_system(workers=0, stock=0, appendfsync="everysec") as system:
        result = run_memory(system, args.minutes)
    judge(result, verdict)
    return verdict.finish(result, args.publish)


if __name__ == "__main__":
    sys.exit(main())
