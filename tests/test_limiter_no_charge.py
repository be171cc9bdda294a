"""A "no" charges nothing, whichever Redis holds the buckets (invariant 5), and the RateLimit
fields read the same in both modes: real API processes, a main Redis and a limiter Redis of
its own (two private redis-servers)."""

import math
import time
import uuid

import http_sf
import httpx
import pytest
from redis import Redis

from service.cli.dev_servers import redis_server
from service.core.keys import gate_key, sale_key
from service.sale.stock_gate import seed, set_gate

pytestmark = pytest.mark.slow

STOCK = 50
"""Fewer units than one order may ask for (100): that order is refused as insufficient stock."""
SLOW_REFILL = "0.01"
"""One token per 100 s: nothing refills while a test runs, so every count is exact."""
RATELIMIT_FIELDS = ("ratelimit-policy", "x-ratelimit-limit", "x-ratelimit-remaining")
MODES = ("shared", "separate")


@pytest.fixture
def limiter_url():
    with redis_server() as url:
        yield url


@pytest.fixture
def limiter(limiter_url):
    with Redis.from_url(limiter_url) as client:
        yield client


@pytest.fixture
def start_api(system, fresh_db, redis, limiter_url):
    """An API whose buckets live on the main Redis ("shared") or on their own ("separate")."""
    seed(fresh_db, redis, stock=STOCK)
    system.env.update(FLASHSALE_RATE_REFILL_PER_SEC=SLOW_REFILL, FLASHSALE_RATE_LEGACY_HEADERS="true")

    def start(mode: str) -> str:
        separate = {"FLASHSALE_LIMITER_REDIS_URL": limiter_url} if mode == "separate" else {}
        system.start_apis(1, extra_env=separate)
        return system.urls[-1]

    return start


def _buy(url, ip, body=None, key=None):
    headers = {"x-forwarded-for": ip} | ({"idempotency-key": key} if key else {})
    return httpx.post(f"{url}/buy", json=body or {}, headers=headers, timeout=10)


def _remaining(response) -> int:
    return http_sf.parse(response.headers["ratelimit"].encode(), tltype="list")[0][1]["r"]


NOT_OPEN = {"product_id": 2}
"""A product whose sale opens in an hour: admit.lua answers "not open" before it reads a gate.
Its own product, so that its latch ("not open yet", in memory) holds no answer for product 1."""


def _not_open(redis):
    redis.hset(sale_key(2), "opens_ms", int((time.time() + 3600) * 1000))
    return lambda: redis.delete(sale_key(2))


def _sold_out(redis):
    set_gate(redis, 1, 0)
    return lambda: set_gate(redis, 1, STOCK)


# refusal -> (sets it up and returns its undoing, request body, asks with a fresh Idempotency-Key)
# A sold-out or not-yet-open product is latched after its first 409: fresh keys make admit.lua
# decide each one, and keep the latch (cleared by a message that arrives when it arrives) out of
# the way after.
REFUSALS = {
    "sale-not-open": (_not_open, NOT_OPEN, True),
    "insufficient-stock": (lambda redis: lambda: None, {"quantity": 100}, False),
    "sold-out": (_sold_out, {}, True),
}


@pytest.mark.parametrize("mode", MODES)
def test_refusals_charge_nothing_so_seven_409s_leave_five_202s(start_api, redis, mode):
    url = start_api(mode)
    for n, (slug, (refuse, body, keyed)) in enumerate(REFUSALS.items()):
        ip = f"198.51.100.{n}"
        undo = refuse(redis)
        key = (lambda: str(uuid.uuid4())) if keyed else (lambda: None)
        refused = [_buy(url, ip, body, key()) for _ in range(7)]
        assert [(r.status_code, r.json()["type"].rsplit(":", 1)[1]) for r in refused] == [(409, slug)] * 7
        assert {_remaining(r) for r in refused} == {5}, slug
        undo()
        assert [_buy(url, ip, key=key()).status_code for _ in range(6)] == [202] * 5 + [429], slug


@pytest.mark.parametrize("mode", MODES)
def test_a_refusal_past_the_per_customer_limit_charges_nothing(start_api, redis, mode):
    url = start_api(mode)
    redis.hset(sale_key(1), "per_customer", 1)
    assert _buy(url, "198.51.100.9").status_code == 202
    refused = [_buy(url, "198.51.100.9") for _ in range(7)]
    assert {(r.status_code, r.json()["type"]) for r in refused} == {
        (409, "urn:flashsale:problem:purchase-limit")
    }
    assert {_remaining(r) for r in refused} == {4}, "only the purchase took a token"


def _commands(redis) -> dict[str, int]:
    """Commands the server ran since its statistics were reset, but the test's own (the reset,
    the INFO that reads them)."""
    stats = redis.info("commandstats")
    return {
        name: s["calls"]
        for name, s in stats.items()
        if not name.startswith(("cmdstat_info", "cmdstat_config"))
    }


def test_a_latched_sold_out_asks_the_limiter_redis_nothing(start_api, redis, limiter):
    url = start_api("separate")
    redis.set(gate_key(1), 0)
    first = _buy(url, "203.0.113.1")
    assert first.status_code == 409 and _remaining(first) == 5  # admit.lua said so: refunded, latched
    limiter.config_resetstat()
    for i in range(20):
        answer = _buy(url, f"203.0.113.{10 + i}")
        assert answer.status_code == 409 and answer.json()["type"] == "urn:flashsale:problem:sold-out"
    assert _commands(limiter) == {}
    assert limiter.dbsize() == 0, "no bucket was charged, not even the first 409's"


def _answers(url: str, redis: Redis) -> list[tuple]:
    """One client through every kind of answer /buy gives, each as ``_fields`` reads it."""
    ip, key = "192.0.2.1", str(uuid.uuid4())
    answers = [
        _buy(url, ip),  # 202
        _buy(url, ip, {"quantity": 100}),  # 409 insufficient-stock
        _buy(url, ip, {"product_id": 999}),  # 422 unknown-product
        _buy(url, ip, key=key),  # 202
        _buy(url, ip, key=key),  # 202, replayed
        _buy(url, ip, {"quantity": 2}, key=key),  # 422 idempotency-key-reused
    ]
    undo = _not_open(redis)
    answers.append(_buy(url, ip, NOT_OPEN))  # 409 sale-not-open, from admit.lua
    undo()
    answers += [_buy(url, "192.0.2.2") for _ in range(6)]  # 202 x 5, 429
    undo = _sold_out(redis)
    answers += [_buy(url, ip), _buy(url, ip)]  # 409 sold-out from admit.lua, then from the latch
    undo()
    return [_fields(answer) for answer in answers]


def _fields(answer) -> tuple:
    """Status, problem type, the RateLimit fields, and whether Retry-After came. Seconds to wait
    are read in tens: with one token per 100 s a run's own seconds can move them by one or two."""
    limits = answer.headers.get("ratelimit")
    if limits is not None:
        limits = [
            (name, params["r"], math.ceil(params["t"] / 10))
            for name, params in http_sf.parse(limits.encode(), tltype="list")
        ]
    others = {name: answer.headers.get(name) for name in RATELIMIT_FIELDS}
    return answer.status_code, answer.json().get("type"), limits, others, "retry-after" in answer.headers


def test_the_ratelimit_fields_are_the_same_in_both_modes(start_api, redis):
    shared = _answers(start_api("shared"), redis)
    separate = _answers(start_api("separate"), redis)
    assert separate == shared
    assert [status for status, *_ in shared] == [202, 409, 422, 202, 202, 422, 409] + [202] * 5 + [
        429,
        409,
        409,
    ]
    # Every answer decided in Redis describes the buckets, a refusal's as if it never came; the
    # 422 for an unknown product and the latch's answer from memory describe none.
    remaining = [limits and limits[0][1] for _, _, limits, _, _ in shared]
    assert remaining == [4, 4, None, 3, 3, 3, 3, 4, 3, 2, 1, 0, 0, 3, None]
    assert [retry_after for *_, retry_after in shared].count(True) == 2  # sale-not-open, 429
