"""The console script: migrate, seed, and `flashsale dev` (what `make run` runs)."""

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url

from service.cli.dev_servers import free_port, port_open, wait_until
from service.core.keys import gate_key
from tests.support.cli import run_cli
from tests.support.database import product_state
from tests.support.orders import wait_all_terminal


def _throwaway_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("flashsale-*"))


def _cli(env, *args, timeout=120):
    return run_cli(env, *args, timeout=timeout)


def test_migrate_creates_a_missing_database_and_is_safe_to_repeat(settings_env, database_url):
    url = make_url(database_url).set(database=f"{make_url(database_url).database}_cli")
    env = {**settings_env, "FLASHSALE_DATABASE_URL": url.render_as_string(hide_password=False)}
    try:
        for _ in range(2):
            result = _cli(env, "migrate")
            assert result.returncode == 0, result.stderr
        engine = create_engine(url, poolclass=pool.NullPool)
        with engine.connect() as connection:
            tables = set(
                connection.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname='public'")
                ).scalars()
            )
        engine.dispose()
        assert {"products", "orders", "alembic_version"} <= tables
    finally:
        admin = create_engine(
            url.set(database="postgres"), poolclass=pool.NullPool, isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()


def test_seed_resets_stock_and_rebuilds_the_gate(settings_env, fresh_db, redis):
    _, version = product_state(fresh_db)
    result = _cli(settings_env, "seed", "--stock", "7")
    assert result.returncode == 0, result.stderr
    assert product_state(fresh_db) == (7, version + 1)
    assert int(redis.get(gate_key(1))) == 7
    # Without --stock an existing product is left alone.
    assert _cli(settings_env, "seed").returncode == 0
    assert product_state(fresh_db) == (7, version + 1)


def test_seed_refuses_a_negative_stock(settings_env):
    result = _cli(settings_env, "seed", "--stock", "-3")
    assert result.returncode == 2 and "must be 0 or more" in result.stderr


def test_migrate_says_clearly_when_postgresql_is_not_there(settings_env):
    env = {**settings_env, "FLASHSALE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}
    result = _cli(env, "migrate", "--wait", "1")
    assert result.returncode == 1
    assert "did not answer" in result.stderr and "Traceback" not in result.stderr


def test_dev_without_servers_names_what_to_install(tmp_path):
    # PATH without redis-server; no FLASHSALE_* URLs, so dev would start its own.
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "FLASHSALE_PORT": str(free_port())}
    result = _cli(env, "dev")
    assert result.returncode == 1
    assert "apt-get install -y redis-server postgresql" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_dev_runs_the_whole_system_on_throwaway_servers_and_cleans_up(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}
    env.update(FLASHSALE_LOG_LEVEL="WARNING")
    before = _throwaway_dirs()
    log = (tmp_path / "dev.log").open("wb")
    dev = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "dev", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready():
            try:
                return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return dev.poll() is not None

        wait_until(ready, 90, "flashsale dev")
        assert dev.poll() is None, (tmp_path / "dev.log").read_text()
        responses = [httpx.post(f"{url}/buy", json={}, timeout=10) for _ in range(10)]
        assert [r.status_code for r in responses] == [202] * 5 + [429] * 5
        views = wait_all_terminal(url, [r.json()["order_id"] for r in responses[:5]], timeout=30)
        assert {v["status"] for v in views.values()} == {"confirmed"}
        assert httpx.get(f"{url}/products/1").json()["stock"] == 95
    finally:
        dev.send_signal(signal.SIGINT)
        code = dev.wait(60)
        log.close()
    assert code == 0, (tmp_path / "dev.log").read_text()
    # Everything it started is gone: no server directories left, nothing serving the port.
    assert _throwaway_dirs() <= before
    assert not port_open("127.0.0.1", port)


def test_api_processes_share_one_port_log_json_and_all_stop_on_sigterm(settings_env, fresh_db, tmp_path):
    port = free_port()
    command = ["api", "--host", "127.0.0.1", "--port", str(port), "--processes", "2"]
    env = {**settings_env, "FLASHSALE_LOG_LEVEL": "INFO", "FLASHSALE_REQUEST_LOG_LEVEL": "INFO"}
    with open(tmp_path / "api.log", "wb") as log:
        api = subprocess.Popen([sys.executable, "-m", "service.cli", *command], env=env, stderr=log)
    try:
        wait_until(lambda: port_open("127.0.0.1", port), 60, "two API processes")
        # uvicorn's supervisor, its resource tracker and the two workers: at least three children.
        wait_until(lambda: len(_children(api.pid)) >= 2, 30, "two uvicorn worker processes")
        children = _children(api.pid)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for _ in range(4):  # new connections: both processes answer some
                assert client.get("/orders/not-an-order", headers={"connection": "close"}).status_code == 404
    finally:
        api.send_signal(signal.SIGTERM)
        assert api.wait(30) == 0
    wait_until(lambda: not any(_running(pid) for pid in children), 10, "no process left behind")
    # The API processes are fresh interpreters: their lines are JSON too, request lines included.
    lines = [json.loads(line) for line in (tmp_path / "api.log").read_text().splitlines() if line.strip()]
    assert sum(1 for line in lines if line["message"] == "request") == 4


def _children(pid: int) -> list[str]:
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


def _running(pid: str) -> bool:
    """Alive and not a zombie waiting for its (re)parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
