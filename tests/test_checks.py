"""``flashsale check``: the worker's liveness probe and the ``helm test`` smoke checks."""

import os
import signal

import pytest

from service.cli.dev_servers import free_port, wait_until
from tests.support.cli import run_cli

pytestmark = pytest.mark.slow


def _check(env: dict[str, str], *args: str):
    return run_cli(env, "check", *args)


def test_ready_and_demo_pass_against_a_live_api_and_fail_otherwise(system):
    # A bucket that cannot refill between the two demos, however slowly the second starts.
    system.start_apis(1, extra_env={"FLASHSALE_RATE_REFILL_PER_SEC": "0.01"})
    system.start_workers(1)
    assert _check(system.env, "ready", "--url", system.url).returncode == 0
    first = _check(system.env, "demo", "--url", system.url)
    assert first.returncode == 0, first.stderr
    # The same client at once again: its bucket is empty, so no 202 at all.
    again = _check(system.env, "demo", "--url", system.url)
    assert again.returncode == 1 and "expected 202s then 429s" in again.stderr
    nobody = _check(system.env, "ready", "--url", f"http://127.0.0.1:{free_port()}")
    assert nobody.returncode == 1 and "unreachable" in nobody.stderr


def test_ready_fails_while_the_api_cannot_reach_postgresql(system):
    """/readyz stays 200 without PostgreSQL (the pod can still take orders), but `helm test`'s
    check must not call such an install working."""
    lost = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/flashsale"
    system.start_apis(1, extra_env={"FLASHSALE_DATABASE_URL": lost})
    result = _check(system.env, "ready", "--url", system.url)
    assert result.returncode == 1 and "PostgreSQL is unreachable" in result.stderr, result.stderr


def test_worker_check_follows_the_workers_heartbeat(system, tmp_path):
    heartbeat = tmp_path / "heartbeat"
    system.env["FLASHSALE_WORKER_HEARTBEAT_FILE"] = str(heartbeat)
    assert "no heartbeat yet" in _check(system.env, "worker").stderr
    system.start_workers(1)
    wait_until(heartbeat.exists, 30, "the worker's first heartbeat")
    assert _check(system.env, "worker", "--max-silence", "3").returncode == 0

    worker = system.workers[0]
    os.killpg(worker.pid, signal.SIGSTOP)  # hung: alive, but its loop no longer turns
    try:
        wait_until(
            lambda: _check(system.env, "worker", "--max-silence", "3").returncode == 1, 30, "a stale beat"
        )
    finally:
        os.killpg(worker.pid, signal.SIGCONT)
    wait_until(lambda: _check(system.env, "worker", "--max-silence", "3").returncode == 0, 30, "a fresh beat")


def test_worker_check_without_a_heartbeat_file_says_so(settings_env):
    result = _check(settings_env, "worker")
    assert result.returncode == 1 and "FLASHSALE_WORKER_HEARTBEAT_FILE is not set" in result.stderr
