"""wrk, driven from Python: ``bench/buy.lua`` loads a route and prints one JSON line of figures.

wrk (Debian package ``wrk``) keeps its connections alive and, with ``BENCH_CLIENTS``, spreads
``POST /buy {}`` over that many client addresses in ``X-Forwarded-For`` (the system under test
must trust the generator's address through ``FLASHSALE_TRUSTED_PROXIES``). On a 2-core machine
wrk and the server share the CPU: compare runs on the same machine, not across machines.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

WRK_SCRIPT = Path(__file__).with_name("buy.lua")
THREAD_DONE = "BENCH-THREAD-DONE"
"""What a buy.lua thread prints when it has sent its share of ``requests``."""


def run_wrk(
    url: str,
    seconds: int,
    connections: int,
    threads: int,
    clients: int,
    method: str = "POST",
    path: str = "/buy",
    requests: int = 0,
    delay_ms: int = 0,
) -> dict:
    """wrk with bench/buy.lua: counts by status and latency percentiles (µs), as a dict.
    ``requests`` > 0 ends the run after about that many answers (or ``seconds``, first);
    ``delay_ms`` > 0 paces each connection (connections * 1000 / (delay + latency) req/s)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed; install it with: apt-get install -y wrk")
    env = {
        **os.environ,
        "BENCH_CLIENTS": str(clients),
        "BENCH_METHOD": method,
        "BENCH_PATH": path,
        "BENCH_REQUESTS_PER_THREAD": str(-(-requests // threads)),
        "BENCH_THREADS": str(threads),
        "BENCH_DELAY_MS": str(delay_ms),
    }
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    command += ["-s", str(WRK_SCRIPT), f"{url}{path}"]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as run:
        output: list[str] = []
        threads_done = 0
        for line in run.stdout:
            output.append(line)
            threads_done += line.startswith(THREAD_DONE)
            if requests and line.startswith(THREAD_DONE) and threads_done == threads:
                # wrk sleeps out its whole duration even when every thread stopped; SIGINT
                # ends the run now and still prints the summary, with the time really spent.
                run.send_signal(signal.SIGINT)
    if run.returncode != 0:
        raise SystemExit(f"wrk failed ({run.returncode}): {''.join(output)[-500:]}")
    line = next(line for line in output if line.startswith("BENCH "))
    figures = json.loads(line.removeprefix("BENCH "))
    figures["statuses"] = {int(status): count for status, count in figures["statuses"].items()}
    figures["server_errors_at"] = {int(second): n for second, n in figures["server_errors_at"].items()}
    figures["requests_per_second"] = figures["requests"] / (figures["duration_us"] / 1e6)
    return figures
