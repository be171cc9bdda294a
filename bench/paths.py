"""The request paths of a sale, each next to its floor, on two API processes.

    python -m bench.paths            # part of `make bench`: 10 s per measurement
    python -m bench.paths --quick    # `make bench-quick` (CI): 3 s per measurement

On throwaway Redis (AOF) and PostgreSQL (fsync on) it starts ``flashsale api --processes 2``
(two uvicorn processes on one port; no workers, so none competes for the cores), then
measures with wrk (Debian's ``wrk``; ``-t2 -c64``, keep-alive) each scenario right after its
floor, ``GET /healthz`` on the same processes (a trivial route with no Redis call), three
times over; the median of the three rounds is reported:

  limited    POST /buy from one client already over its limit (429, from the deny cache)
  sold_out   POST /buy with the gate at zero, 20,000 clients (409, from the latch)
  not_open   POST /buy before the sale opens, 20,000 clients (409 sale-not-open): the flood
             before a drop (reported, no target)
  admit      POST /buy with stock to spare, 200,000 clients (202, one admit.lua call each),
             with Redis's appendfsync everysec, then always (the same processes)
  admit_apart  the admit path again on two fresh API processes whose buckets live on a Redis
             of their own (FLASHSALE_LIMITER_REDIS_URL; AOF everysec on both): how a request's
             Redis CPU splits between the main Redis and the limiter (reported, no target)

For the capacity model (docs/performance.md) each measurement also records, per request, the
CPU time of the API processes, of Redis and of wrk (from /proc, INFO cpu and this process's
children) and Redis's commands (INFO commandstats, less the bench's own INFO calls); the
model's req/s for the machine, its cores over the three CPU times, is reported against the
measured req/s.

The 429 and 409 paths write nothing to Redis, so only the admit path is measured under both
fsync policies. Clients get SLOW_BUCKETS: the limited client is never admitted again and no
admit client is ever limited, so every answer of a scenario must be its status. Absolute
figures drift on shared machines; the ratio to the floor is what to compare. It prints each
of TARGETS with what was measured, saves the figures, and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

from redis import Redis

from bench.system import SLOW_BUCKETS, BenchSystem, durable_redis, run_with, running_system, spend_bucket
from bench.verdict import AT_LEAST, AT_MOST, EXACTLY, Target, Verdict, add_options
from bench.wrk import run_wrk
from service.core.keys import sale_key
from service.sale.stock_gate import set_gate

CONNECTIONS, THREADS = 64, 2
ROUNDS = 3
"""Floor-then-scenario pairs per scenario; the median pair is reported (shared machines drift)."""

TARGETS = (
    Target("limited.ratio", "429 path, one client over its limit: req/s ÷ floor", AT_LEAST, 0.8, "#7"),
    Target("limited.p99", "429 path: p99 ms", AT_MOST, 20, "#7"),
    Target("limited.other", "429 path: answers other than 429, socket errors", EXACTLY, 0, "#15"),
    Target("sold_out.ratio", "sold-out path, 20,000 clients: req/s ÷ floor", AT_LEAST, 0.8, "#7"),
    Target("sold_out.p99", "sold-out path: p99 ms", AT_MOST, 20, "#7"),
    Target("sold_out.other", "sold-out path: answers other than 409, socket errors", EXACTLY, 0, "#15"),
    Target("not_open.ratio", "before the sale opens, 20,000 clients: req/s ÷ floor", None, source="#17"),
    Target("not_open.p99", "before the sale opens: p99 ms", None, source="#17"),
    Target(
        "not_open.other", "before the sale opens: answers other than 409, socket errors", EXACTLY, 0, "#17"
    ),
    Target("admit.rate", "admit path, 200,000 clients, every request queued: req/s", AT_LEAST, 6_500, "#7"),
    Target("admit.ratio", "admit path: req/s ÷ floor", AT_LEAST, 0.5, "#17"),
    Target("admit.p99", "admit path: p99 ms", AT_MOST, 20, "#17"),
    Target("admit.other", "admit path: answers other than 202, socket errors", EXACTLY, 0, "#15"),
    Target("admit_apart.ratio", "admit path, limiter Redis apart: req/s ÷ floor", None, source="#17"),
    Target("admit_apart.p99", "admit path, limiter Redis apart: p99 ms", None, source="#17"),
    Target(
        "admit_apart.other",
        "admit path, limiter Redis apart: answers other than 202, socket errors",
        EXACTLY,
        0,
        "#17",
    ),
    *(
        Target(f"{name}.model", f"{what}: the capacity model's req/s ÷ measured", None, source="#17")
        for name, what in (
            ("limited", "429 path"),
            ("sold_out", "sold-out path"),
            ("not_open", "before the sale opens"),
            ("admit", "admit path"),
            ("admit_apart", "admit path, limiter Redis apart"),
        )
    ),
)


def _cpu_seconds(pid: int) -> float:
    """A process's user and system CPU so far (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _redis_counters(redis: Redis, prefix: str) -> dict:
    """A Redis server's CPU seconds so far, and the commands and script calls it has run (not
    counting the INFO calls that read them)."""
    cpu = redis.info("cpu")
    commands = redis.info("commandstats")
    return {
        f"{prefix}_cpu": cpu["used_cpu_user"] + cpu["used_cpu_sys"],
        f"{prefix}_commands": sum(v["calls"] for k, v in commands.items() if k != "cmdstat_info"),
        f"{prefix}_scripts": sum(
            commands.get(f"cmdstat_{k}", {}).get("calls", 0) for k in ("evalsha", "eval")
        ),
    }


def counters(system: BenchSystem, limiter: Redis | None = None) -> dict:
    """Cumulative CPU seconds of the API processes, of Redis (and of the limiter's Redis, when
    it has its own) and of this process's finished children (wrk), and what each Redis ran."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "api_cpu": sum(_cpu_seconds(pid) for pid in system.api_pids()),
        "client_cpu": children.ru_utime + children.ru_stime,
        **_redis_counters(system.redis, "redis"),
        **(_redis_counters(limiter, "limiter") if limiter is not None else {}),
    }


CPU_COUNTERS = ("api_cpu", "redis_cpu", "limiter_cpu", "client_cpu")


def per_request(before: dict, after: dict, requests: int) -> dict:
    """Costs per request between two ``counters`` readings: CPU in µs; Redis script calls (the
    API's round trips: it sends nothing else on these paths) and the commands Redis ran, those
    the scripts call included (for the limiter's Redis too, when it has its own)."""
    n = max(requests, 1)
    cpu = {f"{k}_us": round((after[k] - before[k]) * 1e6 / n, 1) for k in CPU_COUNTERS if k in after}
    calls = {
        k: round((after[k] - before[k]) / n, 3)
        for k in ("redis_scripts", "redis_commands", "limiter_scripts", "limiter_commands")
        if k in after
    }
    return {**cpu, **calls}


def model_rate(costs: dict, cores: int) -> int:
    """The capacity model's req/s on this machine: its cores over the CPU a request costs."""
    return round(cores * 1e6 / sum(costs.get(f"{k}_us", 0) for k in CPU_COUNTERS))


def _figures(wrk: dict) -> dict:
    return {
        "requests": wrk["requests"],
        "requests_per_second": round(wrk["requests_per_second"]),
        "p50_ms": round(wrk["p50_us"] / 1000, 1),
        "p99_ms": round(wrk["p99_us"] / 1000, 1),
        "statuses": wrk["statuses"],
        "socket_errors": wrk["socket_errors"],
    }


def measure(system: BenchSystem, seconds: int, plan: tuple, limiter: Redis | None = None) -> list[dict]:
    """Each scenario of ``plan`` (name, status, appendfsync) right after its floor, ROUNDS
    times: the median round's figures, its floor and ratio, and what the servers ran with;
    ``limiter``: the limiter's own Redis, whose CPU and commands are counted too."""
    url = system.url

    def load(clients: int, method: str = "POST", path: str = "/buy") -> dict:
        before = counters(system, limiter)
        figures = _figures(run_wrk(url, seconds, CONNECTIONS, THREADS, clients, method, path))
        figures["per_request"] = per_request(before, counters(system, limiter), figures["requests"])
        figures["model_requests_per_second"] = model_rate(figures["per_request"], os.cpu_count() or 1)
        return figures

    def limited() -> dict:
        spend_bucket(url)
        return load(clients=0)

    def sold_out() -> dict:
        set_gate(system.redis, 1, 0)
        return load(clients=20_000)

    def not_open() -> dict:
        set_gate(system.redis, 1, 10**9)
        system.redis.hset(sale_key(1), "opens_ms", int((time.time() + 3600) * 1000))
        try:
            return load(clients=20_000)
        finally:
            system.redis.hdel(sale_key(1), "opens_ms")

    def admit() -> dict:
        set_gate(system.redis, 1, 10**9)
        return load(clients=200_000)

    def floor() -> dict:
        return load(clients=0, method="GET", path="/healthz")

    scenarios = {"limited": limited, "sold_out": sold_out, "not_open": not_open, "admit": admit}
    floor()  # warm-up: the first seconds of fresh processes are slower
    results = []
    for name, expected, appendfsync in plan:
        run = scenarios[name.removesuffix("_apart")]
        system.redis.config_set("appendfsync", appendfsync)
        pairs = []
        for _ in range(ROUNDS):
            base, figures = floor(), run()
            figures["ratio"] = round(figures["requests_per_second"] / base["requests_per_second"], 3)
            pairs.append((figures, base))
        pairs.sort(key=lambda pair: pair[0]["ratio"])
        figures, base = pairs[len(pairs) // 2]  # the median round: its figures and its floor
        results.append(
            {
                "scenario": name,
                **figures,
                "expected_status": expected,
                "floor": base,
                "round_ratios": [pair[0]["ratio"] for pair in pairs],
                "durability": system.durability(),
            }
        )
    return results


PLAN = (
    ("limited", 429, "everysec"),
    ("sold_out", 409, "everysec"),
    ("not_open", 409, "everysec"),
    ("admit", 202, "everysec"),
    ("admit", 202, "always"),
)
PLAN_APART = (("admit_apart", 202, "everysec"),)


def judge(results: list[dict], verdict: Verdict) -> None:
    for r in results:
        name, where = r["scenario"], run_with(r["durability"])
        rounds = " / ".join(f"{ratio:.2f}" for ratio in r["round_ratios"])
        rate = f"{r['requests_per_second']:,} req/s"
        floor = f"floor {r['floor']['requests_per_second']:,}"
        if name == "admit":
            verdict.check("admit.rate", r["requests_per_second"], where, f"{r['ratio']:.2f} x {floor}")
        verdict.check(f"{name}.ratio", r["ratio"], where, f"{rate}, {floor}; rounds {rounds}")
        verdict.check(f"{name}.p99", r["p99_ms"], where, f"p50 {r['p50_ms']:.1f} ms")
        other = {status: n for status, n in r["statuses"].items() if status != r["expected_status"]}
        answers = sum(r["statuses"].values())
        verdict.check(
            f"{name}.other",
            sum(other.values()) + r["socket_errors"],
            where,
            f"of {answers:,} answers; other statuses {other or 'none'}, socket errors {r['socket_errors']}",
        )
        costs = r["per_request"]
        limiter = (
            f" (limiter Redis {costs['limiter_cpu_us']} µs: {costs['limiter_scripts']} script calls"
            f" running {costs['limiter_commands']} commands)"
            if "limiter_cpu_us" in costs
            else ""
        )
        verdict.check(
            f"{name}.model",
            round(r["model_requests_per_second"] / max(r["requests_per_second"], 1), 2),
            where,
            f"model {r['model_requests_per_second']:,} req/s; per request: API {costs['api_cpu_us']} µs,"
            f" Redis {costs['redis_cpu_us']} µs, wrk {costs['client_cpu_us']} µs of CPU;"
            f" {costs['redis_scripts']} Redis script calls running {costs['redis_commands']} commands"
            f"{limiter}",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.paths", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per measurement instead of 10")
    add_options(parser)
    args = parser.parse_args(argv)
    verdict = Verdict("paths", TARGETS, args.target)
    seconds = 3 if args.quick else 10
    with running_system(workers=0, appendfsync="everysec", settings=SLOW_BUCKETS) as system:
        results = measure(system, seconds, PLAN)
    with durable_redis("everysec") as limiter_server, Redis.from_url(limiter_server.url) as limiter:
        apart = {**SLOW_BUCKETS, "FLASHSALE_LIMITER_REDIS_URL": limiter_server.url}
        with running_system(workers=0, appendfsync="everysec", settings=apart) as system:
            results += measure(system, seconds, PLAN_APART, limiter)
    judge(results, verdict)
    return verdict.finish({"scenarios": results}, args.publish)


if __name__ == "__main__":
    sys.exit(main())
