"""The layer in front of Litestar's router: the cheap no (429 from the deny cache, 409 from the
sold-out latch, no Redis call at all) and the accounting every answer gets."""

from __future__ import annotations

import json
import logging

import pytest
from litestar.testing import TestClient
from prometheus_client import REGISTRY

from service.api.app import create_app
from service.core.keys import gate_key
from service.core.settings import settings_from_env
from service.sale.stats import OUTCOME_COUNTS
from tests.support.redis_monitor import background, commands_run


def _redis_commands(redis) -> int:
    """Commands Redis has run, not counting the INFO calls that read this."""
    stats = redis.info("commandstats")
    return sum(s["calls"] for name, s in stats.items() if name != "cmdstat_info")


def _requests(status: int, path: str = "/buy", method: str = "POST") -> float:
    labels = {"method": method, "path": path, "status_code": str(status), "app_name": "flashsale"}
    return REGISTRY.get_sample_value("flashsale_requests_total", labels) or 0.0


@pytest.fixture
def client(settings, fresh_db):
    with TestClient(create_app(settings)) as client:
        yield client


def _limited(client) -> list:
    """Spend this client's five tokens; the answers after the first 429 come from memory."""
    answers = [client.post("/buy", json={}) for _ in range(6)]
    assert [a.status_code for a in answers] == [202] * 5 + [429]
    return answers


def _without_volatile(headers) -> dict:
    return {k: v for k, v in headers.items() if k not in ("date", "ratelimit", "retry-after")}


def test_a_cached_429_calls_no_redis_and_reads_like_the_full_paths(client, redis):
    from_redis = _limited(client)[-1]
    before, counted = _redis_commands(redis), _requests(429)
    cached = [client.post("/buy", json={}) for _ in range(20)]
    assert _redis_commands(redis) == before
    assert {a.status_code for a in cached} == {429}
    for answer in cached:
        assert answer.json() == from_redis.json()
        assert _without_volatile(answer.headers) == _without_volatile(from_redis.headers)
        assert 1 <= int(answer.headers["retry-after"]) <= int(from_redis.headers["retry-after"])
    assert _requests(429) == counted + 20


def test_a_latched_sold_out_409_calls_no_redis_and_reads_like_the_full_paths(client, redis, redis_url):
    redis.set(gate_key(1), 0)
    from_redis = client.post("/buy", json={"product_id": 1})
    assert from_redis.status_code == 409
    # Every command in the window, as MONITOR shows it, but what the app sends on its own (the
    # once-a-second flush of the answers' counts made this flaky when counted by commandstats).
    with commands_run(redis_url) as commands:
        latched = [client.post("/buy", json={"product_id": 1}) for _ in range(3)] + [client.post("/buy")]
    assert [command for command in commands if not background(command)] == []
    for answer in latched:
        assert (answer.status_code, answer.json()) == (409, from_redis.json())
        assert answer.headers["content-type"] == "application/problem+json"


def test_what_the_latch_layer_read_reaches_the_full_path(client, redis, fresh_db):
    redis.set(gate_key(1), 0)
    assert client.post("/buy", json={"product_id": 1}).status_code == 409  # product 1 latched
    unknown = client.post("/buy", json={"product_id": 2})
    assert unknown.status_code == 422 and unknown.json()["product_id"] == 2  # its body was replayed
    bad = client.post("/buy", content=b'{"quantity": 0}', headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["type"] == "urn:flashsale:problem:invalid-request"
    assert client.post("/buy", content=b"{not json").status_code == 400


def test_requests_the_cheap_no_is_unsure_about_go_the_full_way(client):
    _limited(client)
    bad_key = client.post("/buy", json={}, headers={"idempotency-key": "x" * 300})
    assert bad_key.status_code == 400
    assert bad_key.json()["type"] == "urn:flashsale:problem:invalid-idempotency-key"


def test_a_browsers_cached_429_still_carries_cors_headers(settings_env, fresh_db):
    settings = settings_from_env({**settings_env, "FLASHSALE_CORS_ORIGINS": "https://shop.example"})
    with TestClient(create_app(settings)) as client:
        origin = {"origin": "https://shop.example"}
        answers = [client.post("/buy", json={}, headers=origin) for _ in range(7)]
        assert [a.status_code for a in answers] == [202] * 5 + [429] * 2
        assert answers[-1].headers["access-control-allow-origin"] == "https://shop.example"


def test_every_answer_is_counted_and_logged_once_by_route_template(client, caplog):
    caplog.set_level(logging.DEBUG, logger="flashsale.requests")
    OUTCOME_COUNTS.take()
    before = {
        "order": _requests(404, "/orders/{order_id}", "GET"),
        "unmatched": _requests(404, "unmatched", "GET"),
        "limited": _requests(429),
    }
    assert client.get("/orders/00000000-0000-0000-0000-000000000000").status_code == 404
    assert client.get("/no/such/route").status_code == 404
    _limited(client)
    assert client.post("/buy", json={}).status_code == 429  # from memory
    assert _requests(404, "/orders/{order_id}", "GET") == before["order"] + 1
    assert _requests(404, "unmatched", "GET") == before["unmatched"] + 1
    assert _requests(429) == before["limited"] + 2
    outcomes = {outcome: n for (_, outcome), n in OUTCOME_COUNTS.take().items()}
    assert outcomes == {"admitted": 5, "limited": 2}
    lines = [r for r in caplog.records if r.name == "flashsale.requests"]
    assert [(r.method, r.status) for r in lines] == [("GET", 404)] * 2 + [("POST", 202)] * 5 + [
        ("POST", 429)
    ] * 2
    assert "/no/such/route" in {r.path for r in lines}
    assert client.get("/healthz").status_code == 200  # probes: neither counted nor logged
    assert len([r for r in caplog.records if r.name == "flashsale.requests"]) == len(lines)


def test_a_retry_with_its_key_gets_its_order_back_after_a_sell_out_and_past_its_limit(client, redis):
    """A buyer whose 202 was lost asks again with its Idempotency-Key: neither the sold-out latch
    nor the deny cache may answer for it, or it would never learn its order."""
    key = {"idempotency-key": "lost-answer"}
    first = client.post("/buy", json={}, headers=key)
    assert first.status_code == 202
    _spent = [client.post("/buy", json={}) for _ in range(5)]  # now over its limit: cached 429s
    assert _spent[-1].status_code == 429 and client.post("/buy", json={}).status_code == 429
    redis.set(gate_key(1), 0)
    assert client.post("/buy", json={}, headers={"idempotency-key": "other"}).status_code in (409, 429)
    for _ in range(2):
        again = client.post("/buy", json={}, headers=key)
        assert again.status_code == 202 and again.json()["order_id"] == first.json()["order_id"]
        assert again.headers["idempotent-replayed"] == "true"


def test_a_429_from_memory_is_rendered_once_per_limit_and_second_to_wait():
    from service.api.fast_buy import _memory_limited_answer
    from service.limiter.ratelimit import LimitState, Outcome, Verdict

    burst = {"name": "burst", "key": "ip", "capacity": 3, "refill_per_sec": 0.01}
    daily = {"name": "daily", "key": "ip", "capacity": 50, "refill_per_sec": 0.001}
    rules = json.dumps({"buy": {"limits": [burst, daily]}})
    policies = settings_from_env({"FLASHSALE_RATE_POLICIES": rules}).policies

    def denied(limit: int, retry_ms: int) -> Verdict:
        policy = policies["buy"]
        state = LimitState(policy.limits[limit], False, 0, retry_ms, 0)
        return Verdict(Outcome.LIMITED, policy, (state,), cached=True)

    first = _memory_limited_answer(denied(0, 41_200), legacy_headers=False)
    assert _memory_limited_answer(denied(0, 41_900), legacy_headers=False) is first  # both wait 42 s
    headers = dict(first.headers)
    assert (first.status, headers[b"retry-after"]) == (429, b"42")
    assert headers[b"ratelimit"] == b'"burst";r=0;t=42'
    assert headers[b"ratelimit-policy"] == b'"burst";q=3;w=300, "daily";q=50;w=50000'
    assert b"retry in 42s" in first.body
    later = _memory_limited_answer(denied(0, 40_100), legacy_headers=False)
    other_limit = _memory_limited_answer(denied(1, 41_200), legacy_headers=False)
    legacy = _memory_limited_answer(denied(0, 41_200), legacy_headers=True)
    assert dict(later.headers)[b"retry-after"] == b"41"
    assert dict(other_limit.headers)[b"ratelimit"] == b'"daily";r=0;t=42' and b"daily" in other_limit.body
    assert dict(legacy.headers)[b"x-ratelimit-limit"] == b"3"
    assert len({id(a) for a in (first, later, other_limit, legacy)}) == 4


def test_the_fast_path_knows_every_app_level_layer_it_leaves_out(settings_env):
    """A plain ``POST /buy`` is answered in front of Litestar (``service.api.fast_buy``), so an
    app-level layer added later would silently skip it. The app has none but those the fast path
    steps aside for: CORS (a request with an Origin goes the full way) and tracing (likewise,
    whenever it is on). Adding one means teaching the fast path about it, then this test."""
    app = create_app(settings_from_env({**settings_env, "FLASHSALE_CORS_ORIGINS": "https://shop.example"}))
    assert [type(m).__name__ for m in app.middleware] == []
    assert app.cors_config is not None  # the one the fast path knows: requests with an Origin
    hooks = (app.before_request, app.after_request, app.after_response)
    assert hooks == (None, None, None) and app.before_send == [] and app.guards == []
    assert set(app.dependencies) == {"resources", "dashboard"}
    assert app.response_headers == [] and app.response_cookies == []
