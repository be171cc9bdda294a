"""How fast the limiter decides, from the script up to HTTP.

    python -m bench.limiter

On a throwaway redis-server it measures, in one run:
  1. decisions/s from one Python process calling token_buckets.lua one at a time (plain),
     and in pipelines of 16 and 500;
  2. redis-benchmark running the same EVALSHA on the same Redis (what Redis itself can do);
  3. ``POST /buy`` on the 429 path (one client far over its limit) through one API process,
     with and without the local deny cache, next to ``GET /healthz`` on the same process as a
     floor (the cost of HTTP alone), and on the sold-out path (409). Load comes from wrk.
"""

from __future__ import annotations

import asyncio
import json
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

from service.lua import load_scripts, script_source
from service.settings import REPO_ROOT
from service.stock_gate import gate_key
from service.throwaway import free_port, redis_server, wait_until

CALLS = 20_000
ARGS = ["", 5, 1_000_000, 1]  # Redis clock; capacity 5, 1 token/s, cost 1


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


def _wrk(url: str, post: bool, seconds: int = 8) -> float:
    script = ["-s", str(REPO_ROOT / "bench" / "post_empty.lua")] if post else []
    out = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{seconds}s", *script, url], capture_output=True, text=True, check=True
    ).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


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


def _http_figures(redis_url: str, deny_cache: bool) -> tuple[float, float]:
    """The 429 path (one client far over its limit), and the /healthz floor."""
    Redis.from_url(redis_url).set(gate_key(1), 10**9)  # plenty of stock: only the limiter says no
    with _running_api(redis_url, FLASHSALE_LIMITER_DENY_CACHE=str(deny_cache).lower()) as base:
        for _ in range(6):  # spend the one client's bucket
            httpx.post(f"{base}/buy", json={})
        return _wrk(f"{base}/buy", post=True), _wrk(f"{base}/healthz", post=False)


def _sold_out_figure(redis_url: str) -> float:
    """The 409 path: the gate at zero, 20,000 clients (each within its limit), latched."""
    Redis.from_url(redis_url).set(gate_key(1), 0)
    with _running_api(redis_url, FLASHSALE_TRUSTED_PROXIES="127.0.0.1/32") as base:
        out = subprocess.run(
            ["wrk", "-t2", "-c64", "-d8s", "-s", str(REPO_ROOT / "bench" / "buy.lua"), f"{base}/buy"],
            env={**os.environ, "BENCH_CLIENTS": "20000"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    figures = json.loads(
        next(line for line in out.splitlines() if line.startswith("BENCH ")).removeprefix("BENCH ")
    )
    if set(figures["statuses"]) != {"409"}:
        raise SystemExit(f"expected only 409s, got {figures['statuses']}")
    return figures["requests"] / (figures["duration_us"] / 1e6)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> int:
    for tool in ("wrk", "redis-benchmark", "redis-cli"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed; apt-get install -y wrk redis-tools")
    with redis_server() as redis_url:
        plain = asyncio.run(_decisions_per_second(redis_url, 1))
        piped_16 = asyncio.run(_decisions_per_second(redis_url, 16))
        piped_500 = asyncio.run(_decisions_per_second(redis_url, 500))
        server = _redis_benchmark(redis_url)
        cached_429, floor = _http_figures(redis_url, deny_cache=True)
        uncached_429, floor_again = _http_figures(redis_url, deny_cache=False)
        sold_out = _sold_out_figure(redis_url)
    print("limiter decisions/s, one Python process (redis.asyncio, token_buckets.lua)")
    print(f"  plain, one call at a time      {plain:>10,.0f}")
    print(f"  pipelined, 16 per round trip   {piped_16:>10,.0f}")
    print(f"  pipelined, 500 per round trip  {piped_500:>10,.0f}")
    print(f"  redis-benchmark EVALSHA, 50 c  {server:>10,.0f}")
    print("POST /buy on the 429 path, one API process, wrk -t2 -c64")
    print(f"  with the deny cache            {cached_429:>10,.0f} req/s  ({cached_429 / floor:.2f} x floor)")
    ratio = uncached_429 / floor_again
    print(f"  without it                     {uncached_429:>10,.0f} req/s  ({ratio:.2f} x floor)")
    print(f"  floor: GET /healthz            {floor:>10,.0f} req/s, {floor_again:,.0f} in the second run")
    print("POST /buy on the sold-out path (gate at zero, latched), one API process, 20,000 clients")
    print(f"  409 answers                    {sold_out:>10,.0f} req/s  ({sold_out / floor:.2f} x floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
