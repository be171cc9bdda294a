"""``flashsale dev`` (what ``make run`` runs): the whole system on this machine.

Uses the Redis and PostgreSQL named by the environment when they answer, otherwise starts
throwaway ones; migrates, seeds, then runs the API and worker(s) until Ctrl-C, and stops
everything it started. Once the API is ready and every worker listens, it prints a banner on
stdout: where to look and the README's demo command.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack

from redis.exceptions import RedisError
from rq import Worker

from db.migrate import DatabaseUnavailable, migrate, wait_for_server
from db.session import make_engine
from service.cli.checks import check_ready
from service.cli.dev_servers import postgres_server, redis_server
from service.core.logs import colour_on
from service.core.redis_clients import sync_redis
from service.core.settings import Settings, redact_url
from service.sale.order_jobs import order_queue
from service.sale.stock_gate import seed

log = logging.getLogger(__name__)
CHILD_STOP_TIMEOUT_SECONDS = 15


def _redis_answers(url: str) -> bool:
    try:
        with sync_redis(url, timeout=1) as client:
            return bool(client.ping())
    except (RedisError, ValueError):
        return False


def _database_answers(url: str) -> bool:
    try:
        wait_for_server(url, timeout=2)
    except DatabaseUnavailable:
        return False
    return True


def _choose_redis(stack: ExitStack, configured: str | None) -> str:
    if configured and _redis_answers(configured):
        return configured
    if configured:
        log.warning(
            "configured Redis does not answer; starting a throwaway one",
            extra={"url": redact_url(configured)},
        )
    url = stack.enter_context(redis_server())
    log.info("started throwaway redis-server", extra={"url": url})
    return url


def _choose_database(stack: ExitStack, configured: str | None) -> str:
    if configured and _database_answers(configured):
        return configured
    if configured:
        log.warning(
            "configured PostgreSQL does not answer; starting a throwaway one",
            extra={"url": redact_url(configured)},
        )
    url = stack.enter_context(postgres_server())
    log.info("started throwaway PostgreSQL", extra={"url": url})
    return url


def _spawn(command: str, env: dict[str, str], *args: str) -> subprocess.Popen:
    # A session of its own: Ctrl-C reaches only us, and we stop children before servers.
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", command, *args], env=env, start_new_session=True
    )


def run_dev(settings: Settings, port: int, workers: int, stock: int | None) -> int:
    """Run until interrupted; returns the process exit code."""
    environ = os.environ
    with ExitStack() as stack:
        redis_url = _choose_redis(stack, environ.get("FLASHSALE_REDIS_URL"))
        database_url = _choose_database(stack, environ.get("FLASHSALE_DATABASE_URL"))
        migrate(database_url)
        engine = make_engine(database_url, pool_size=1)
        with sync_redis(redis_url) as redis:
            product = seed(engine, redis, stock)
        engine.dispose()
        log.info("seeded demo product", extra={"product_id": product.id, "stock": product.stock})

        env = {**environ, "FLASHSALE_REDIS_URL": redis_url, "FLASHSALE_DATABASE_URL": database_url}
        if "FLASHSALE_LIMITER_REDIS_URL" not in environ:
            env["FLASHSALE_LIMITER_REDIS_URL"] = redis_url
        children = [_spawn("api", env, "--port", str(port))]
        children += [_spawn("worker", env) for _ in range(workers)]
        stack.callback(_stop_children, children)
        log.info("flashsale is running", extra={"api": f"http://127.0.0.1:{port}", "workers": workers})
        worker_pids = {child.pid for child in children[1:]}
        return _wait_for_signal_or_exit(
            children,
            up=lambda: _everything_answers(f"http://127.0.0.1:{port}", redis_url, worker_pids),
            announce=lambda: _print_banner(port),
        )


def _everything_answers(api_url: str, redis_url: str, worker_pids: set[int]) -> bool:
    """The API is ready (PostgreSQL reachable too) and every worker listens on the queue."""
    if check_ready(api_url) is not None:
        return False
    try:
        with sync_redis(redis_url, timeout=1) as redis:
            return worker_pids <= {worker.pid for worker in Worker.all(queue=order_queue(redis))}
    except RedisError:
        return False


def banner(port: int, colour: bool) -> str:
    """Where to look once everything answers, and the README's demo; bold and cyan when ``colour``."""
    url = f"http://localhost:{port}"

    def paint(code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if colour else text

    demo = (
        "for i in $(seq 10); do curl -s -o /dev/null -w '%{http_code}\\n' -X POST "
        f"localhost:{port}/buy -H 'content-type: application/json' -d '{{}}'; done"
    )
    rows = [
        ("API", paint("36", url)),
        ("dashboard", paint("36", f"{url}/dashboard")),
        ("OpenAPI", paint("36", f"{url}/schema")),
        ("demo", demo),
        ("", "(one client: 202s while its burst lasts, then 429s)"),
    ]
    lines = [paint("1", "flashsale is up") + " (Ctrl-C stops everything)"]
    lines += [f"  {name:<10} {value}".rstrip() for name, value in rows]
    return "\n" + "\n".join(lines) + "\n"


def _print_banner(port: int) -> None:
    print(banner(port, colour_on(sys.stdout)), flush=True)


def _wait_for_signal_or_exit(
    children: list[subprocess.Popen], up: Callable[[], bool], announce: Callable[[], None]
) -> int:
    stopping = False
    announced = False

    def _stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stopping:
        for child in children:
            if child.poll() is not None:
                log.error(
                    "a child process exited; stopping", extra={"pid": child.pid, "code": child.returncode}
                )
                return 1
        if not announced and up():
            announce()
            announced = True
        time.sleep(0.2)
    return 0


def _stop_children(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + CHILD_STOP_TIMEOUT_SECONDS
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
