"""A flash sale against ``POST /buy``: requests/s, latency percentiles and answers by status.

    python -m bench.buy_load                          # starts `flashsale dev` on a free port, stops it after
    python -m bench.buy_load --url http://host:8000   # an already running system

The load comes from wrk (Debian package ``wrk``) running ``bench/buy.lua``: keep-alive
connections, every request ``POST /buy {}`` from one of ``--clients`` addresses given in
``X-Forwarded-For`` (the system under test must trust the generator's address through
``FLASHSALE_TRUSTED_PROXIES``; the local system does). On a 2-core machine wrk and the
server share the CPU: compare runs on the same machine, not across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from service.throwaway import free_port, wait_until

WRK_SCRIPT = Path(__file__).with_name("buy.lua")


def run_wrk(
    url: str,
    seconds: int,
    connections: int,
    threads: int,
    clients: int,
    method: str = "POST",
    path: str = "/buy",
) -> dict:
    """wrk with bench/buy.lua: counts by status and latency percentiles (µs), as a dict."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed; install it with: apt-get install -y wrk")
    result = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(WRK_SCRIPT),
            f"{url}{path}",
        ],
        env={**os.environ, "BENCH_CLIENTS": str(clients), "BENCH_METHOD": method, "BENCH_PATH": path},
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("BENCH "))
    figures = json.loads(line.removeprefix("BENCH "))
    figures["statuses"] = {int(status): count for status, count in figures["statuses"].items()}
    figures["requests_per_second"] = figures["requests"] / (figures["duration_us"] / 1e6)
    return figures


def wait_for_drain(url: str, expected_stock: int, timeout: float = 120) -> float:
    """Seconds until the database shows every admitted order confirmed."""
    began = time.perf_counter()
    wait_until(
        lambda: httpx.get(f"{url}/products/1", timeout=5).json()["stock"] <= expected_stock,
        timeout,
        "workers to confirm every admitted order",
        interval=0.05,
    )
    return time.perf_counter() - began


@contextmanager
def local_system(stock: int, workers: int):
    """`flashsale dev` on a free port, trusting loopback so clients can be told apart."""
    port = free_port()
    env = {**os.environ, "FLASHSALE_TRUSTED_PROXIES": "127.0.0.1/32", "FLASHSALE_LOG_LEVEL": "WARNING"}
    command = ["dev", "--port", str(port), "--workers", str(workers), "--stock", str(stock)]
    dev = subprocess.Popen([sys.executable, "-m", "service.cli", *command], env=env)
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


def report(figures: dict, drain_seconds: float | None) -> None:
    statuses = figures["statuses"]
    print(f"requests        {figures['requests']:>10,}")
    print(f"seconds         {figures['duration_us'] / 1e6:>10.2f}")
    print(f"requests/s      {figures['requests_per_second']:>10,.0f}")
    print(f"latency p50 ms  {figures['p50_us'] / 1000:>10.1f}")
    print(f"latency p99 ms  {figures['p99_us'] / 1000:>10.1f}")
    for status in (202, 409, 429):
        print(f"{status}             {statuses.get(status, 0):>10,}")
    others = {s: n for s, n in statuses.items() if s not in (202, 409, 429)}
    if others or figures["socket_errors"]:
        print(f"other answers   {others}, socket errors {figures['socket_errors']}")
    if drain_seconds is not None:
        print(f"all confirmed   {drain_seconds:>10.2f} s after the last request")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.buy_load", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running system (default: start `flashsale dev`)")
    parser.add_argument("--seconds", type=int, default=10, help="how long the load runs")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--clients", type=int, default=20_000, help="distinct client addresses")
    parser.add_argument("--stock", type=int, default=5_000, help="demo product stock (own system only)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (own system only)")
    args = parser.parse_args(argv)

    def measure(url: str, stock: int | None) -> None:
        figures = run_wrk(url, args.seconds, args.connections, args.threads, args.clients)
        drain = None
        if stock is not None:
            drain = wait_for_drain(url, stock - figures["statuses"].get(202, 0))
        report(figures, drain)

    if args.url:
        measure(args.url, None)
    else:
        with local_system(args.stock, args.workers) as url:
            measure(url, args.stock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
