"""``flashsale dev`` (what ``make run`` runs): the whole system on this machine.

Uses the Redis and PostgreSQL named by the environment when they answer, otherwise starts
throwaway ones; migrates, seeds, then runs the API and worker(s) until Ctrl-C, and stops
everything it started.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack

from redis.exceptions import RedisError

from db.migrate import DatabaseUnavailable, migrate, wait_for_server
from db.session import make_engine
from service.cli.dev_servers import postgres_server, redis_server
from service.core.redis_clients import sync_redis
from service.core.settings import Settings, redact_url
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
        return _wait_for_signal_or_exit(children)


def _wait_for_signal_or_exit(children: list[subprocess.Popen]) -> int:
    stopping = False

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
