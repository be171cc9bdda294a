"""The HTTP API in-process (Litestar's TestClient) on the real Redis and PostgreSQL."""

import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from litestar.testing import TestClient

from service.api.app import create_app
from service.cli.dev_servers import wait_until
from service.core.keys import gate_key
from service.core.logs import Throttled
from service.core.policies import policy_digest
from tests.support.lanes import drains
from tests.support.problems import assert_problem
from tests.support.tcp_proxy import TcpProxy, tcp_proxy


@pytest.fixture
def client(settings, fresh_db):
    with TestClient(create_app(settings)) as client:
        yield client


def test_an_empty_object_buys_one_of_the_demo_product(client):
    response = client.post("/buy", json={})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["status_url"] == f"/orders/{body['order_id']}" == response.headers["location"]
    assert response.headers["ratelimit"] == '"per-ip";r=4;t=1'
    assert response.headers["ratelimit-policy"] == '"per-ip";q=5;w=5'
    assert client.get(body["status_url"]).json() == {"order_id": body["order_id"], "status": "queued"}


def test_no_body_at_all_is_the_same_as_an_empty_object(client):
    assert client.post("/buy").status_code == 202


@pytest.mark.parametrize(
    "body",
    [
        {"quantity": 0},
        {"quantity": -1},
        {"quantity": 101},
        {"quantity": 10**30},
        {"quantity": 1.5},
        {"quantity": True},
        {"quantity": "lots"},
        {"quantity": None},
        {"product_id": 0},
        {"product_id": -5},
        {"product_id": 2**40},
        {"product_id": "abc"},
        {"product_id": [1]},
        {"qty": 2},
        [],
        "one",
        17,
    ],
)
def test_bad_bodies_are_400_problems(client, body):
    problem = assert_problem(client.post("/buy", json=body), 400)
    assert problem["type"] == "urn:flashsale:problem:invalid-request"
    assert problem["errors"], problem


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"quantity": 1', b"\xff\xfe\x00", b"not json", b'{"quantity": 1}{"quantity": 2}'],
)
def test_malformed_json_is_a_400_problem(client, raw):
    assert_problem(client.post("/buy", content=raw, headers={"content-type": "application/json"}), 400)


def test_an_oversized_body_is_refused_with_413(client):
    assert_problem(
        client.post("/buy", content=b" " * 20_000, headers={"content-type": "application/json"}), 413
    )


def test_an_unknown_product_is_422(client, redis):
    problem = assert_problem(client.post("/buy", json={"product_id": 424242}), 422)
    assert problem["type"] == "urn:flashsale:problem:unknown-product"
    assert not redis.exists(gate_key(424242))


def test_sold_out_is_409_and_a_too_large_order_says_what_is_left(client, redis):
    redis.set(gate_key(1), 2)
    problem = assert_problem(client.post("/buy", json={"quantity": 3}), 409)
    assert problem["type"] == "urn:flashsale:problem:insufficient-stock" and problem["available"] == 2
    assert client.post("/buy", json={"quantity": 2}).status_code == 202
    problem = assert_problem(client.post("/buy", json={}), 409)
    assert problem["type"] == "urn:flashsale:problem:sold-out"


def test_a_lost_gate_is_rebuilt_from_the_database(client, redis):
    redis.delete(gate_key(1))
    assert client.post("/buy", json={"quantity": 2}).status_code == 202
    assert int(redis.get(gate_key(1))) == 98


def test_the_sixth_instant_request_is_429_with_retry_after(client):
    statuses = [client.post("/buy", json={}).status_code for _ in range(5)]
    assert statuses == [202] * 5
    response = client.post("/buy", json={})
    problem = assert_problem(response, 429)
    assert problem["type"] == "urn:flashsale:problem:rate-limited"
    assert problem["violated"] == ["per-ip"]
    assert response.headers["retry-after"] == "1"
    assert response.headers["ratelimit"] == '"per-ip";r=0;t=1'


def test_orders_and_products_that_do_not_exist_are_404_problems(client):
    assert_problem(client.get(f"/orders/{uuid.uuid4()}"), 404)
    assert_problem(client.get("/orders/not-a-uuid"), 404)
    assert_problem(client.get("/products/999"), 404)
    assert_problem(client.get("/products/abc"), 404)
    assert_problem(client.get("/nowhere"), 404)


def test_a_wrong_method_is_a_405_problem(client):
    assert_problem(client.get("/buy"), 405)


def test_product_shows_stock_and_sale_state(client, redis):
    body = client.get("/products/1").json()
    assert body == {
        "id": 1,
        "name": "iPhone 15",
        "price": "999.99",
        "stock": 100,
        "available": 100,
        "sold_out": False,
        "sale": "open",
        "sale_opens_at": None,
        "sale_closes_at": None,
        "per_customer_limit": None,
    }
    redis.set(gate_key(1), 0)
    assert client.get("/products/1").json()["sold_out"] is True
    assert client.get("/products/1").json()["sale"] == "sold_out"


def test_probes(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    policy = body["limiter"].pop("policy")
    assert body == {
        "status": "ready",
        "checks": {"redis": True, "accepting": True},
        "database": {"reachable": True, "error": None},
        "limiter": {"redis": True, "breaker": "closed", "degraded": False},
    }
    # The policy in force: what an operator compares across pods.
    limiter = client.app.state.resources.limiter
    assert policy == {
        "digest": policy_digest(limiter.policies),
        "loaded_at": datetime.fromtimestamp(limiter.active.loaded_at, UTC).isoformat(),
    }


def test_metrics_are_exposed_for_prometheus(client):
    client.post("/buy", json={})
    body = client.get("/metrics").text
    assert "flashsale_requests_total" in body
    assert 'path="/buy"' in body


def test_cors_is_off_unless_origins_are_configured(client):
    preflight = client.options(
        "/buy", headers={"origin": "https://shop.example", "access-control-request-method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_configured_origins_may_call_the_api_from_a_browser(settings_env, fresh_db):
    from service.core.settings import settings_from_env

    settings = settings_from_env({**settings_env, "FLASHSALE_CORS_ORIGINS": "https://shop.example"})
    with TestClient(create_app(settings)) as client:
        preflight = client.options(
            "/buy",
            headers={
                "origin": "https://shop.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
        response = client.post("/buy", json={}, headers={"origin": "https://shop.example"})
        assert response.headers["access-control-allow-origin"] == "https://shop.example"
        assert "location" in response.headers["access-control-expose-headers"].lower()
        other = client.post("/buy", json={}, headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_an_idempotency_key_replays_the_first_answer(client, redis):
    first = client.post("/buy", json={"quantity": 2}, headers={"idempotency-key": '"order-attempt-1"'})
    again = client.post("/buy", json={"quantity": 2}, headers={"idempotency-key": "order-attempt-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["order_id"] == first.json()["order_id"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert int(redis.get(gate_key(1))) == 98, "the replay took nothing more"
    reused = assert_problem(
        client.post("/buy", json={"quantity": 1}, headers={"idempotency-key": "order-attempt-1"}), 422
    )
    assert reused["type"] == "urn:flashsale:problem:idempotency-key-reused"


@pytest.mark.parametrize("key", ["", '""', "x" * 256, "bad\tkey", b"caf\xe9"])
def test_a_malformed_idempotency_key_is_a_400(client, key):
    response = client.post("/buy", json={}, headers={"idempotency-key": key})
    assert assert_problem(response, 400)["type"] == "urn:flashsale:problem:invalid-idempotency-key"


def test_a_connection_reset_under_uvloop_counts_as_a_redis_failure(redis_url):
    """uvloop closes a transport the peer reset, and a write to it then raises RuntimeError;
    our connection class turns that into the ConnectionError every caller treats as a lost
    connection (a 503, not a 500)."""
    import asyncio

    import uvloop
    from redis.exceptions import ConnectionError as RedisConnectionError

    from service.core.redis_clients import RedisConnection

    async def write_after_a_reset(proxy: TcpProxy) -> None:
        connection = RedisConnection(host="127.0.0.1", port=proxy.port)
        await connection.connect()
        proxy.drop()
        # redis-py has no public view of its transport: wait until uvloop has seen the reset.
        async with asyncio.timeout(10):
            while not connection._writer.transport.is_closing():
                await asyncio.sleep(0.01)
        try:
            with pytest.raises(RedisConnectionError, match="connection closed while writing"):
                await connection.send_command("PING")
        finally:
            await connection.disconnect()

    with tcp_proxy(urlsplit(redis_url).port) as proxy:
        uvloop.run(write_after_a_reset(proxy))


def test_an_outage_logs_one_line_a_second_not_one_per_503(monkeypatch, caplog):
    from redis.exceptions import ConnectionError as RedisConnectionError

    from service.api import problems as errors

    monkeypatch.setattr(errors, "UNAVAILABLE_LOG", Throttled(errors.log))
    with caplog.at_level("WARNING", logger=errors.log.name):
        problems = [errors.unavailable_problem("/buy", RedisConnectionError()) for _ in range(100)]
        assert {(p.status_code, p.headers["Retry-After"]) for p in problems} == {(503, "1")}
        monkeypatch.setattr(errors.UNAVAILABLE_LOG, "interval", 0)
        errors.unavailable_problem("/buy", RedisConnectionError())
    lines = [r for r in caplog.records if r.getMessage() == "dependency unavailable"]
    assert [(r.error, r.unlogged_before) for r in lines] == [("ConnectionError", 0), ("ConnectionError", 99)]


def test_metrics_show_the_queue_depth_worker_autoscaling_follows(client, redis):
    """No worker runs here: the three admitted orders wait for the draining jobs of the lanes
    they fell in (one job per lane); two live started entries (and one a dead worker left
    behind, expired) make the in-flight count."""
    for _ in range(3):
        assert client.post("/buy", json={}).status_code == 202
    jobs = len(drains(redis))
    assert 1 <= jobs <= 3
    now = time.time()
    redis.zadd("rq:wip:orders", {"a:1": now + 60, "b:1": now + 60, "dead:1": now - 1})

    def gauges() -> dict[str, float]:
        body = client.get("/metrics").text
        return {
            name: float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            for name in ("flashsale_queue_depth", "flashsale_queue_in_flight", "flashsale_queue_backlog")
            if line.startswith(f'{name}{{queue="orders"}}')
        }

    expected = {
        "flashsale_queue_depth": jobs,
        "flashsale_queue_in_flight": 2,
        "flashsale_queue_backlog": jobs + 2,
    }
    wait_until(lambda: gauges() == expected, 10, f"queue gauges {expected}")
