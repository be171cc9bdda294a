"""How fast the limiter decides, from the script up to HTTP.

    python -m bench.limiter

On a throwaway redis-server with its AOF on it measures, in one run:
  1. decisions/s from one Python process calling token_buckets.lua one at a time (plain),
     and in pipelines of 16 and 500;
  2. redis-benchmark running the same EVALSHA on the same Redis (what Redis itself can do);
     each decision admits, so writes: 1 and 2 with appendfsync everysec, then always;
  3. ``POST /buy`` on the 429 path (one client far over its limit: SLOW_BUCKETS) through one
     API process, with and without the local deny cache, next to ``GET /healthz`` on the same
     process as a floor (the cost of HTTP alone), and on the sold-out path (409). Load comes
     from wrk. A "no" writes nothing, so these run once, with the chart's appendfsync always.
It prints each of TARGETS with what was measured (the figures of 1 and 2 are reported; every
answer of a path must be its status, and the deny cache must make the 429 path faster), saves
the figures, and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
from redis import Redis
from redis import asyncio as aioredis

from bench.system import (
    APPENDFSYNC,
    SLOW_BUCKETS,
    durable_redis,
    read_durability,
    run_with,
    spend_bucket,
)
from bench.verdict import AT_LEAST, EXACTLY, Target, Verdict, add_options
from bench.wrk import run_wrk
from service.cli.dev_servers import free_port, wait_until
from service.core.keys import gate_key
from service.core.lua import load_scripts, script_source
from service.core.settings import REPO_ROOT

CALLS = 20_000
ARGS = ["", 5, 1_000_000, 1]  # Redis clock; capacity 5, 1 token/s, cost 1
SECONDS = 8

TARGETS = (
    Target("plain", "decisions/s, one Python process, one call at a time", source="#3"),
    Target("pipelined_16", "decisions/s, pipelined 16 per round trip", source="#3"),
    Target("pipelined_500", "decisions/s, pipelined 500 per round trip", source="#3"),
    Target("redis_benchmark", "redis-benchmark EVALSHA, 50 connections (Redis's own ceiling)", source="#3"),
    Target("cached", "429 path with the deny cache: req/s ÷ floor", source="#3"),
    Target("uncached", "429 path without it: req/s ÷ floor", source="#3"),
    Target("deny_cache_gain", "the deny cache's gain: 429 path ÷ floor, with ÷ without", AT_LEAST, 1, "#3"),
    Target("sold_out", "sold-out path, latched, 20,000 clients: req/s ÷ floor", source="#4"),
    Target("other", "answers other than the path's status (429, 409), socket errors", EXACTLY, 0, "#15"),
)


async def _decisions_per_second(redis_url: str, batch: int) -> float:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=None)
    script = load_scripts(client, REPO_ROOT / "lua").token_buckets
    keys = [[f"fs:rl:{{bench:ip:{i}}}:per-ip"] for i in range(CALLS)]
    await script(keys=keys[0], args=ARGS)  # load the script once
    started = time.perf_counter()
    if batch == 1:
        for key in keys:
            await script(keys=key, args=ARGS)
    else:
        for first in range(0, CALLS, batch):
            async with client.pipeline(transaction=False) as pipe:
                for key in keys[first : first + batch]:
                    await script(keys=key, args=ARGS, client=pipe)
                await pipe.execute()
    elapsed = time.perf_counter() - started
    await client.aclose()
    return CALLS / elapsed


def _redis_benchmark(redis_url: str) -> float:
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    sha = subprocess.run(
        ["redis-cli", "-p", port, "SCRIPT", "LOAD", script_source("token_buckets", REPO_ROOT / "lua")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    result = subprocess.run(
        [
            "redis-benchmark",
            "-p",
            port,
            "-n",
            "200000",
            "-c",
            "50",
            "-r",
            "100000",
            "-q",
            "EVALSHA",
            sha,
            "1",
            "fs:rl:{bench:ip:__rand_int__}:per-ip",
            "",
            "5",
            "1000000",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(re.findall(r"([\d.]+) requests per second", result)[-1])


@contextmanager
def _running_api(redis_url: str, **env: str):
    """One API process on a free port (no database needed for the paths measured here)."""
    port = free_port()
    settings = {"FLASHSALE_REDIS_URL": redis_url, "FLASHSALE_LOG_LEVEL": "WARNING", **env}
    api = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **settings},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/healthz"), 30, "API")
        yield base
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(30)


def _path(base: str, clients: int, expected: int) -> dict:
    """wrk on ``POST /buy`` from ``clients`` addresses, next to the floor: figures, ratio and
    how many answers were not ``expected``."""
    path = run_wrk(base, SECONDS, 64, 2, clients)
    floor = run_wrk(base, SECONDS, 64, 2, 0, "GET", "/healthz")
    other = sum(n for status, n in path["statuses"].items() if status != expected) + path["socket_errors"]
    return {
        "requests_per_second": round(path["requests_per_second"]),
        "floor_requests_per_second": round(floor["requests_per_second"]),
        "ratio": round(path["requests_per_second"] / floor["requests_per_second"], 3),
        "statuses": path["statuses"],
        "other": other,
    }


def _limited(redis_url: str, deny_cache: bool) -> dict:
    """The 429 path: one client far over its limit, plenty of stock (only the limiter says no)."""
    Redis.from_url(redis_url).set(gate_key(1), 10**9)
    settings = {**SLOW_BUCKETS, "FLASHSALE_LIMITER_DENY_CACHE": str(deny_cache).lower()}
    with _running_api(redis_url, **settings) as base:
        spend_bucket(base)
        return _path(base, clients=0, expected=429)


def _sold_out(redis_url: str) -> dict:
    """The 409 path: the gate at zero, 20,000 clients (each within its limit), latched."""
    Redis.from_url(redis_url).set(gate_key(1), 0)
    with _running_api(redis_url, FLASHSALE_TRUSTED_PROXIES="127.0.0.1/32") as base:
        return _path(base, clients=20_000, expected=409)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _decisions(redis_url: str) -> dict:
    return {
        "plain": round(asyncio.run(_decisions_per_second(redis_url, 1))),
        "pipelined_16": round(asyncio.run(_decisions_per_second(redis_url, 16))),
        "pipelined_500": round(asyncio.run(_decisions_per_second(redis_url, 500))),
        "redis_benchmark": round(_redis_benchmark(redis_url)),
    }


def judge(figures: dict, verdict: Verdict) -> None:
    for decisions in figures["decisions"]:
        for key in ("plain", "pipelined_16", "pipelined_500", "redis_benchmark"):
            verdict.check(key, decisions[key], run_with(decisions["durability"]))
    http = figures["http"]
    where = run_with(http["durability"])
    cached, uncached, sold_out = http["cached"], http["uncached"], http["sold_out"]
    for key, path in (("cached", cached), ("uncached", uncached), ("sold_out", sold_out)):
        rates = f"{path['requests_per_second']:,} req/s, floor {path['floor_requests_per_second']:,}"
        verdict.check(key, path["ratio"], where, rates)
    gain = round(cached["ratio"] / uncached["ratio"], 3)
    verdict.check("deny_cache_gain", gain, where, f"{cached['ratio']} ÷ {uncached['ratio']}")
    statuses = "; ".join(f"{key} {http[key]['statuses']}" for key in ("cached", "uncached", "sold_out"))
    verdict.check("other", cached["other"] + uncached["other"] + sold_out["other"], where, statuses)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.limiter", description=__doc__.splitlines()[0])
    add_options(parser)
    args = parser.parse_args(argv)
    for tool in ("wrk", "redis-benchmark", "redis-cli"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed; apt-get install -y wrk redis-tools")
    verdict = Verdict("limiter", TARGETS, args.target)
    figures: dict = {"decisions": []}
    with durable_redis("always") as server, Redis.from_url(server.url) as redis:
        for appendfsync in APPENDFSYNC:
            redis.config_set("appendfsync", appendfsync)
            figures["decisions"].append({"durability": read_durability(redis), **_decisions(server.url)})
        figures["http"] = {
            "durability": read_durability(redis),
            "cached": _limited(server.url, deny_cache=True),
            "uncached": _limited(server.url, deny_cache=False),
            "sold_out": _sold_out(server.url),
        }
    judge(figures, verdict)
    return verdict.finish(figures, args.publish)


if __name__ == "__main__":
    sys.exit(main())
