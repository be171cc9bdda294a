"""The live dashboard: the /buy outcome counter and its flush, the snapshot, and the page in a
real headless Chromium during a sale run by real API and worker processes."""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from collections import Counter

import httpx
import pytest
from litestar.testing import TestClient
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Worker
from sqlalchemy import text as sql

from service.api.app import create_app
from service.api.dashboard import RECENT_ORDERS, WINDOW_SECONDS
from service.cli.dev_servers import free_port, wait_until
from service.core.keys import gate_key, stats_key
from service.sale.order_jobs import order_queue
from service.sale.stats import OUTCOME_COUNTS, OUTCOMES, STATS_TTL_SECONDS, OutcomeCounter, outcome_of
from tests.support.dashboard import (
    dashboard_page,
    fits_laptop,
    maybe_save_screenshot,
    milliseconds,
    number,
    recent_order_ids,
    text,
)
from tests.support.database import product_state
from tests.support.load import fire_concurrently
from tests.support.orders import wait_all_terminal

BUYER_ADDRESS = re.compile(r"\b10\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")


def _totals(**counts: int) -> dict[str, int]:
    return {outcome: counts.get(outcome, 0) for outcome in OUTCOMES}


# --- the outcome counter ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "replayed", "outcome"),
    [
        (202, False, "admitted"),
        (202, True, "replayed"),
        (429, False, "limited"),
        (409, False, "sold_out"),
        (400, False, "refused"),
        (422, False, "refused"),
        (500, False, "failed"),
        (503, False, "failed"),
        (200, False, None),
    ],
)
def test_each_final_status_is_one_bounded_outcome(status, replayed, outcome):
    assert outcome_of(status, replayed) == outcome


def test_counts_reach_redis_in_one_flush_per_second_and_expire(redis_url, redis):
    counter = OutcomeCounter()
    for _ in range(3):
        counter.count("admitted", second=1000)
    counter.count("limited", second=1000)
    counter.count("sold_out", second=1001)

    async def flush_twice():
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            first = await counter.flush(client)
            counter.count("admitted", second=1000)  # a late answer of an already flushed second adds up
            second = await counter.flush(client)
            nothing = await counter.flush(client)
        finally:
            await client.aclose()
        return first, second, nothing

    assert asyncio.run(flush_twice()) == (5, 1, 0)
    assert redis.hgetall(stats_key(1000)) == {b"admitted": b"4", b"limited": b"1"}
    assert redis.hgetall(stats_key(1001)) == {b"sold_out": b"1"}
    assert 0 < redis.ttl(stats_key(1000)) <= STATS_TTL_SECONDS


def test_a_failed_flush_keeps_the_counts_for_the_next_one(redis_url, redis):
    counter = OutcomeCounter()
    now = int(time.time())
    counter.count("admitted", second=now)
    counter.count("failed", second=now - STATS_TTL_SECONDS - 5)  # its key would have expired: dropped

    async def flush_to_nowhere_then_to_redis():
        nowhere = aioredis.Redis(port=free_port(), socket_connect_timeout=1)
        with pytest.raises((RedisConnectionError, OSError)):
            await counter.flush(nowhere)
        await nowhere.aclose()
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            return await counter.flush(client)
        finally:
            await client.aclose()

    assert asyncio.run(flush_to_nowhere_then_to_redis()) == 1
    assert redis.hgetall(stats_key(now)) == {b"admitted": b"1"}


# --- in process: the API with its middleware, the snapshot -----------------------------------


@pytest.fixture
def client(settings, fresh_db):
    OUTCOME_COUNTS.take()  # answers other tests of this process counted and never flushed
    with TestClient(create_app(settings)) as client:
        yield client


def _snapshot_totals(client) -> dict[str, int]:
    return client.get("/dashboard/snapshot").json()["outcomes"]["totals"]


def test_every_answer_of_buy_is_counted_by_its_final_status_cluster_wide(client, fresh_db, redis):
    # In process every request comes from one client, with five tokens.
    gone = _insert_product(fresh_db, "Limited vinyl", 0)
    redis.set(gate_key(gone), 0)
    assert client.post("/buy", json={"product_id": gone}).status_code == 409  # takes no token
    key = {"idempotency-key": "k1"}
    assert [client.post("/buy", headers=key).status_code for _ in range(2)] == [202, 202]  # one replayed
    assert client.post("/buy", json={"quantity": 0}).status_code == 400
    statuses = [client.post("/buy").status_code for _ in range(6)]
    assert statuses == [202] * 4 + [429] * 2  # 429s come from an exception handler
    assert client.get("/products/1").status_code == 200  # not an answer of /buy: not counted

    expected = _totals(admitted=5, replayed=1, limited=2, sold_out=1, refused=1)
    # Flushed by the lifespan's task within a second or so; the snapshot is at most a second old.
    wait_until(lambda: _snapshot_totals(client) == expected, 10, f"totals {expected}")
    assert sum(int(n) for key in redis.keys("fs:stats:*") for n in redis.hgetall(key).values()) == 10


def _insert_product(engine, name: str, stock: int) -> int:
    with engine.begin() as connection:
        return connection.execute(
            sql(
                "INSERT INTO products (name, price, stock, version)"
                " VALUES (:name, 10, :stock, 0) RETURNING id"
            ),
            {"name": name, "stock": stock},
        ).scalar_one()


def _insert_order(engine, order_id, status, reason, latency_ms, decided_seconds_ago, client_id):
    with engine.begin() as connection:
        connection.execute(
            sql(
                """
                INSERT INTO orders
                    (id, product_id, client_id, quantity, status, reason, admitted_at, decided_at)
                VALUES (:id, 1, :client, 1, :status, :reason,
                        now() - make_interval(secs => :ago) - make_interval(secs => :latency / 1000.0),
                        now() - make_interval(secs => :ago))
                """
            ),
            {
                "id": order_id,
                "client": client_id,
                "status": status,
                "reason": reason,
                "ago": decided_seconds_ago,
                "latency": latency_ms,
            },
        )


def test_the_snapshot_tells_units_queue_workers_latency_and_recent_orders_without_personal_data(
    client, fresh_db, redis
):
    with fresh_db.begin() as connection:
        connection.execute(sql("UPDATE products SET stock = 80 WHERE id = 1"))
    redis.set(gate_key(1), 75)  # five units promised to orders the workers have not applied yet
    gone = _insert_product(fresh_db, "Limited vinyl", 0)
    redis.set(gate_key(gone), 0)
    # 20 orders decided over the last 20 s, taking 10, 20, … 200 ms; one older one outside the window.
    order_ids = [uuid.uuid4() for _ in range(20)]
    for i, order_id in enumerate(order_ids, start=1):
        status, reason = ("rejected", "sold_out") if i in (3, 7) else ("confirmed", None)
        _insert_order(fresh_db, order_id, status, reason, i * 10, i, f"customer-{i}@10.9.8.{i}")
    _insert_order(fresh_db, uuid.uuid4(), "confirmed", None, 5000, WINDOW_SECONDS + 120, "old@10.9.9.9")
    queue = order_queue(redis)
    alive = Worker([queue], connection=redis, name=f"dashboard-alive-{uuid.uuid4().hex[:6]}")
    alive.register_birth()
    dead = Worker([queue], connection=redis, name=f"dashboard-dead-{uuid.uuid4().hex[:6]}")
    dead.register_birth()
    redis.delete(dead.key)  # SIGKILLed: its heartbeat key expired, RQ's registry still names it

    response = client.get("/dashboard/snapshot")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    snapshot = response.json()

    assert snapshot["products"] == [
        {"id": 1, "name": "iPhone 15", "stock": 80, "available": 75, "sold_out": False},
        {"id": gone, "name": "Limited vinyl", "stock": 0, "available": 0, "sold_out": True},
    ]
    assert snapshot["units_left"] == 80
    assert snapshot["queue"] == {"waiting": 0, "in_flight": 0, "undecided": 0, "workers": 1}
    orders = snapshot["orders"]
    assert (orders["confirmed"], orders["rejected"]) == (19, 2)
    # percentile_cont over 10…200 ms: the median between 100 and 110, p95 5 % of the way from 190 to 200.
    assert orders["latency_ms"] == {"decided": 20, "p50": 105.0, "p95": 190.5}
    recent = orders["recent"]
    assert [row["order_id"] for row in recent] == [str(order_id) for order_id in order_ids[:RECENT_ORDERS]]
    assert recent[2] == {
        "order_id": str(order_ids[2]),
        "product_id": 1,
        "quantity": 1,
        "status": "rejected",
        "reason": "sold_out",
        "latency_ms": 30.0,
    }
    outcomes = snapshot["outcomes"]
    assert outcomes["window_seconds"] == WINDOW_SECONDS and len(outcomes["series"]) == WINDOW_SECONDS
    assert outcomes["totals"] == _totals()
    body = response.text
    assert "customer" not in body and "client" not in body and not BUYER_ADDRESS.search(body)


def test_the_page_and_its_files_are_plain_local_files(client):
    page = client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "EventSource" not in page.text and 'src="dashboard/static/dashboard.js"' in page.text
    script = client.get("/dashboard/static/dashboard.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "new EventSource(" in script.text
    style = client.get("/dashboard/static/dashboard.css")
    assert style.headers["content-type"].startswith("text/css")
    for served in (page, script, style):  # no CDN, no web font: it must work offline
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", served.text, re.IGNORECASE), served.url
    unknown = client.get("/dashboard/static/evil.js")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["type"] == "urn:flashsale:problem:not-found"


def test_the_dashboard_is_not_counted_as_api_traffic(client):
    client.get("/dashboard/snapshot")
    metrics = client.get("/metrics").text
    assert 'path="/dashboard' not in metrics


# --- real processes and a real browser -------------------------------------------------------


def _buyers(prefix: str, count: int, each: int = 1) -> list[tuple[str, dict]]:
    return [(f"10.{prefix}.{i // 256}.{i % 256}", {}) for i in range(count) for _ in range(each)]


def _shown(page, names) -> dict[str, int | None]:
    return {name: number(page, name) for name in names}


def _wait_for_page(page, expected: dict[str, int], timeout: float, what: str) -> None:
    try:
        wait_until(lambda: _shown(page, expected) == expected, timeout, what, 0.2)
    except TimeoutError:
        pytest.fail(f"{what}: the page shows {_shown(page, expected)}, the truth is {expected}")


def _decided(engine) -> tuple[Counter, list[str]]:
    with engine.connect() as connection:
        counts = Counter(
            dict(connection.execute(sql("SELECT status, count(*) FROM orders GROUP BY status")).all())
        )
        latest = connection.execute(
            sql("SELECT id FROM orders ORDER BY decided_at DESC, id LIMIT :n"), {"n": RECENT_ORDERS}
        ).scalars()
        return counts, [str(order_id) for order_id in latest]


def _truth(engine, statuses: Counter) -> dict[str, int]:
    counts, _ = _decided(engine)
    stock, _ = product_state(engine)
    return {
        "units_left": stock,
        "confirmed": counts["confirmed"],
        "rejected": counts["rejected"],
        "total-admitted": statuses[202],
        "total-limited": statuses[429],
        "total-sold_out": statuses[409],
        "total-refused": 0,
        "total-failed": 0,
        "queue-waiting": 0,
        "queue-undecided": 0,
        "queue-workers": 2,
    }


@pytest.mark.slow
def test_the_page_shows_a_live_sale_as_the_database_and_the_buyers_saw_it(system, fresh_db):
    system.start_apis(2)
    system.start_workers(2)
    started = time.monotonic()
    with dashboard_page(system.urls[0]) as page:
        wait_until(lambda: text(page, "connection") == "live", 15, "the page to connect")
        _wait_for_page(page, {"units_left": 100, "queue-workers": 2}, 10, "the page before the sale")

        # First, bursts in separate seconds over both APIs: single buyers, and a few clients
        # asking eight times at once (the per-second outcomes must add up across seconds and pods).
        statuses = Counter()
        first = []
        for burst in range(4):
            buyers = _buyers(f"{burst + 1}", 8) + _buyers(f"{burst + 11}", 1, each=8)
            first += fire_concurrently(system.urls, buyers, processes=2)
        statuses.update(reply.status for reply in first)
        assert set(statuses) <= {202, 429}, statuses
        assert statuses[429] > 0, "some clients must have been rate limited"
        wait_all_terminal(system.url, [r.order_id for r in first if r.status == 202])
        expected = _truth(fresh_db, statuses)
        assert 0 < expected["units_left"] < 100
        _wait_for_page(page, expected, 15, "the page mid-sale")
        maybe_save_screenshot(page, when=lambda: number(page, "rate-admitted") > 0)

        # Second wave: more buyers than units left; the sale sells out.
        second = fire_concurrently(system.urls, _buyers("99", 300), processes=4)
        statuses.update(reply.status for reply in second)
        assert set(statuses) <= {202, 409, 429}, statuses
        assert statuses[202] == 100
        admitted = [r.order_id for r in first + second if r.status == 202]
        wait_all_terminal(system.url, admitted)
        expected = _truth(fresh_db, statuses)
        assert expected["units_left"] == 0 and expected["confirmed"] == 100
        _wait_for_page(page, expected, 15, "the page after the sale")
        assert time.monotonic() - started < WINDOW_SECONDS, "the sale outlasted the dashboard's window"

        _, latest = _decided(fresh_db)
        wait_until(lambda: recent_order_ids(page) == latest, 10, "the page's recent orders")
        assert set(latest) <= set(admitted)
        sold_out = page.locator("#products tbody tr[data-product-id='1'] .state-sold-out")
        assert sold_out.inner_text() == "sold out"
        assert number(page, "latency-decided") > 0 and milliseconds(page, "latency-p95") is not None
        # Read as decimals ("38.6" is less than "104"), and again if a new second came between.
        wait_until(
            lambda: milliseconds(page, "latency-p50") <= milliseconds(page, "latency-p95"),
            5,
            "p50 at most p95",
        )
        assert not BUYER_ADDRESS.search(page.content()), "the page shows no client address"
        assert fits_laptop(page), "the page must fit a 1366x768 screen"
        assert page.script_errors == []


def _read_events(lines, events: list[str], until: str) -> None:
    for line in lines:
        if line.startswith("event: "):
            events.append(line.removeprefix("event: "))
            if events[-1] == until:
                return


@pytest.mark.slow
def test_open_streams_do_not_hold_a_graceful_shutdown_and_the_page_reconnects(system, fresh_db):
    system.start_apis(1)
    (process, url) = system.apis[0]
    with dashboard_page(url) as page:
        wait_until(lambda: text(page, "connection") == "live", 15, "the page to connect")
        events: list[str] = []
        with httpx.stream("GET", f"{url}/dashboard/events", timeout=10) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            _read_events(lines, events, until="snapshot")
            stopping = time.monotonic()
            process.send_signal(signal.SIGTERM)
            _read_events(lines, events, until="bye")
            process.wait(10)
        # uvicorn would otherwise wait out its 10 s graceful-shutdown timeout for the open streams.
        assert time.monotonic() - stopping < 5, "SIGTERM took as long as the shutdown timeout"
        assert events[-1] == "bye"
        # uvicorn re-raises the signal it handled once it has shut down cleanly.
        assert process.returncode == -signal.SIGTERM, system.logs()
        assert "graceful shutdown exceeded" not in system.logs()
        wait_until(lambda: text(page, "connection").startswith("disconnected"), 10, "the page to notice")

        # The same address comes back (as a pod behind a service would): the page reconnects.
        port = url.rsplit(":", 1)[1]
        system.apis[0] = (
            system._spawn(f"api-{port}-again", "api", "--host", "127.0.0.1", "--port", port),
            url,
        )
        wait_until(lambda: _ready(url), 30, f"API {url} again")
        wait_until(lambda: text(page, "connection") == "live", 15, "the page to reconnect")
        assert page.script_errors == []


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
