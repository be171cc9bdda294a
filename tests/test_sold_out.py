"""Sold out is instant: each API process latches it, and a restock clears it everywhere."""

import time

import httpx
import pytest
from redis import Redis

from db.migrate import migrate
from db.session import make_engine
from service.cli.dev_servers import postgres_server, wait_until
from service.sale.stock_gate import seed
from tests.support.redis_monitor import background, commands_run
from tests.support.system import System

pytestmark = pytest.mark.slow


def _buy(url, ip, **kw):
    return httpx.post(f"{url}/buy", json={}, headers={"x-forwarded-for": ip}, timeout=10, **kw)


def _latch_answers(url: str) -> float:
    (line,) = [
        line
        for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines()
        if line.startswith("flashsale_sold_out_latch_answers_total ")
    ]
    return float(line.split(" ")[1])


def test_after_a_sell_out_no_needs_neither_redis_nor_postgresql(settings_env, redis, tmp_path):
    system = System(env={**settings_env, "FLASHSALE_RATE_REFILL_PER_SEC": "0.05"}, log_dir=tmp_path)
    try:
        with postgres_server() as database_url:  # a PostgreSQL of this test's own, to stop
            migrate(database_url)
            engine = make_engine(database_url, pool_size=1)
            seed(engine, redis, stock=7)
            engine.dispose()
            system.env["FLASHSALE_DATABASE_URL"] = database_url
            system.start_apis(1)
            url = system.url
            assert [_buy(url, "203.0.113.1").status_code for _ in range(6)] == [202] * 5 + [429]
            assert [_buy(url, "203.0.113.2").status_code for _ in range(2)] == [202, 202]
            assert _buy(url, "203.0.113.3").status_code == 409  # the gate said so: latched now
        # PostgreSQL is stopped. Its shutdown may outlast the latch, which lapses after
        # LATCH_SECONDS (in case an announcement is missed): a "no" from the gate latches anew.
        assert _buy(url, "203.0.113.4").status_code == 409
        answered_from_the_latch = _latch_answers(url)
        # Redis still answers, but is not asked: of every command it runs meanwhile, none is a request's.
        with commands_run(system.env["FLASHSALE_REDIS_URL"]) as commands:
            for i in range(10):
                response = _buy(url, f"198.51.100.{i}")
                assert response.status_code == 409
                assert response.json()["type"] == "urn:flashsale:problem:sold-out"
            limited = _buy(url, "203.0.113.1")
            assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert [command for command in commands if not background(command)] == []
        assert "flashsale_sold_out_latched 1.0" in httpx.get(f"{url}/metrics", timeout=5).text
        assert _latch_answers(url) == answered_from_the_latch + 10
    finally:
        system.stop()


def test_a_restock_reopens_the_sale_on_every_replica_at_once(system, fresh_db, redis):
    seed(fresh_db, redis, stock=1)
    system.start_apis(2)
    assert _buy(system.urls[0], "203.0.113.10").status_code == 202
    for i, url in enumerate(system.urls):
        assert _buy(url, f"203.0.113.{20 + i}").status_code == 409  # both latched

    seed(fresh_db, Redis.from_url(system.env["FLASHSALE_REDIS_URL"]), stock=3)
    started = time.monotonic()
    for i, url in enumerate(system.urls):
        # Well inside the latch's own lapse (5 s): the announcement did it.
        wait_until(
            lambda u=url, n=i: _buy(u, f"203.0.113.{30 + n}").status_code == 202, 2, f"replica {i} reopened"
        )
    assert time.monotonic() - started < 2
