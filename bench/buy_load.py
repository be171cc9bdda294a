"""A flash sale against ``POST /buy``: requests/s, latency percentiles and answers by status.

    python -m bench.buy_load                     # starts `flashsale dev` on a free port, then stops it
    python -m bench.buy_load --url http://host:8000   # an already running system

Clients are told apart by ``X-Forwarded-For`` (the system under test must trust the load
generator's address: ``FLASHSALE_TRUSTED_PROXIES``). Requests come from several processes,
each an asyncio httpx client; on a 2-core machine the generator competes with the server
for CPU, so read the numbers as a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager

import httpx

from service.throwaway import free_port, wait_until


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def _drive(url: str, clients: list[str], count: int, concurrency: int) -> list[tuple[int, float]]:
    results: list[tuple[int, float]] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        queue = iter(range(count))

        async def lane() -> None:
            for i in queue:
                started = time.perf_counter()
                response = await client.post(
                    "/buy", json={}, headers={"x-forwarded-for": clients[i % len(clients)]}
                )
                results.append((response.status_code, time.perf_counter() - started))

        await asyncio.gather(*(lane() for _ in range(concurrency)))
    return results


def _process(url, clients, count, concurrency, start) -> list[tuple[int, float]]:
    start.wait()
    return asyncio.run(_drive(url, clients, count, concurrency))


def run_load(url: str, requests: int, clients: int, processes: int, concurrency: int) -> dict:
    addresses = [f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(clients)]
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(processes) as pool:
        start = manager.Event()
        shares = [requests // processes + (p < requests % processes) for p in range(processes)]
        pending = [
            pool.apply_async(_process, (url, addresses[p::processes], shares[p], concurrency, start))
            for p in range(processes)
        ]
        began = time.perf_counter()
        start.set()
        results = [item for result in pending for item in result.get(timeout=600)]
        elapsed = time.perf_counter() - began
    latencies = sorted(latency for _, latency in results)
    return {
        "requests": len(results),
        "seconds": elapsed,
        "requests_per_second": len(results) / elapsed,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else 0.0,
        "statuses": dict(sorted(Counter(status for status, _ in results).items())),
    }


def wait_for_drain(url: str, expected_stock: int, timeout: float = 120) -> float:
    """Seconds until the database shows every admitted order confirmed."""
    began = time.perf_counter()
    wait_until(
        lambda: httpx.get(f"{url}/products/1", timeout=5).json()["stock"] <= expected_stock,
        timeout,
        "workers to confirm every admitted order",
        interval=0.1,
    )
    return time.perf_counter() - began


@contextmanager
def local_system(stock: int, workers: int):
    """`flashsale dev` on a free port, trusting loopback so clients can be told apart."""
    port = free_port()
    env = {**os.environ, "FLASHSALE_TRUSTED_PROXIES": "127.0.0.1/32", "FLASHSALE_LOG_LEVEL": "WARNING"}
    dev = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "dev",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--stock",
            str(stock),
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return dev.poll() is not None

    try:
        wait_until(ready, 120, "flashsale dev")
        if dev.poll() is not None:
            raise SystemExit("flashsale dev did not start")
        yield url
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(60)


def _report(figures: dict, drain_seconds: float | None) -> None:
    statuses = figures["statuses"]
    print(f"requests        {figures['requests']:>10,}")
    print(f"seconds         {figures['seconds']:>10.2f}")
    print(f"requests/s      {figures['requests_per_second']:>10,.0f}")
    print(f"latency p50 ms  {figures['p50_ms']:>10.1f}")
    print(f"latency p99 ms  {figures['p99_ms']:>10.1f}")
    for status in (202, 409, 429):
        print(f"{status}             {statuses.get(status, 0):>10,}")
    others = {s: n for s, n in statuses.items() if s not in (202, 409, 429)}
    if others:
        print(f"other statuses  {others}")
    if drain_seconds is not None:
        print(f"all confirmed   {drain_seconds:>10.2f} s after the last request")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.buy_load", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running system (default: start `flashsale dev`)")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=2_000, help="distinct client addresses")
    parser.add_argument("--stock", type=int, default=1_000, help="demo product stock (own system only)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (own system only)")
    parser.add_argument("--processes", type=int, default=2, help="load-generating processes")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight per process")
    args = parser.parse_args(argv)

    def measure(url: str, stock: int | None) -> None:
        figures = run_load(url, args.requests, args.clients, args.processes, args.concurrency)
        drain = None
        if stock is not None:
            drain = wait_for_drain(url, stock - figures["statuses"].get(202, 0))
        _report(figures, drain)

    if args.url:
        measure(args.url, None)
    else:
        with local_system(args.stock, args.workers) as url:
            measure(url, args.stock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
