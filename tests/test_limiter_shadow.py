"""Shadow mode in-process: a limit that is checked and charged but never denies, on both paths
of /buy and on the other limited routes; counted, marked on the span, absent from headers."""

import asyncio
import json

import http_sf
import pytest
from litestar.testing import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis import Redis

from service.api.app import create_app
from service.core.keys import client_bucket_key, gate_key
from service.core.settings import settings_from_env
from service.limiter.identity import ClientIdentity
from service.sale.resources import close_resources, open_resources

SHADOW_SALE = {
    "buy": {
        "limits": [
            {"name": "per-ip", "key": "ip", "capacity": 5, "refill_per_sec": 0.01},
            {"name": "tight", "key": "ip", "capacity": 2, "refill_per_sec": 0.01, "mode": "shadow"},
        ]
    },
    "orders": {"limits": [{"name": "reads", "key": "ip", "capacity": 1, "refill_per_sec": 0.01}]},
}


def _decisions(client, route, outcome):
    for line in client.get("/metrics").text.splitlines():
        labelled = f'route="{route}"' in line and f'outcome="{outcome}"' in line
        if line.startswith("flashsale_limiter_decisions_total{") and labelled:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _app(settings_env, **env):
    return create_app(settings_from_env({**settings_env, **env}))


@pytest.mark.parametrize("path", ["fast", "route"])
def test_a_shadow_limit_admits_counts_and_stays_out_of_the_headers(settings_env, fresh_db, path):
    # A browser's Origin (with CORS on) sends /buy the full Litestar way; without it, the fast path.
    origin = {"origin": "https://shop.example"} if path == "route" else {}
    env = {
        "FLASHSALE_RATE_POLICIES": json.dumps(SHADOW_SALE),
        "FLASHSALE_CORS_ORIGINS": "https://shop.example",
    }
    with TestClient(_app(settings_env, **env)) as client:
        before = _decisions(client, "buy", "shadow_limited"), _decisions(client, "buy", "admitted")
        replies = [client.post("/buy", json={}, headers=origin) for _ in range(6)]
        assert [r.status_code for r in replies] == [202] * 5 + [429], "only the enforced limit denies"
        assert _decisions(client, "buy", "shadow_limited") - before[0] == 3  # the 3rd, 4th and 5th
        assert _decisions(client, "buy", "admitted") - before[1] == 2
        for reply in replies:
            names = [name for name, _ in http_sf.parse(reply.headers["ratelimit"].encode(), tltype="list")]
            assert names == ["per-ip"] and '"tight"' not in reply.headers["ratelimit-policy"]
        assert replies[-1].json()["violated"] == ["per-ip"]


def test_every_limit_in_shadow_admits_everything_and_sends_no_headers(settings_env, fresh_db):
    env = {"FLASHSALE_RATE_POLICIES": json.dumps(SHADOW_SALE), "FLASHSALE_RATE_SHADOW": "true"}
    with TestClient(_app(settings_env, **env)) as client:
        before = _decisions(client, "buy", "shadow_limited"), _decisions(client, "orders", "shadow_limited")
        replies = [client.post("/buy", json={}) for _ in range(8)]
        assert [r.status_code for r in replies] == [202] * 8
        assert "ratelimit" not in replies[-1].headers and "ratelimit-policy" not in replies[-1].headers
        assert _decisions(client, "buy", "shadow_limited") - before[0] == 6  # the 3rd on (tight)
        order = replies[0].json()["order_id"]
        assert [client.get(f"/orders/{order}").status_code for _ in range(3)] == [200] * 3
        assert _decisions(client, "orders", "shadow_limited") - before[1] == 2


def test_the_decision_is_marked_on_the_requests_span(settings, redis):
    asyncio.run(_marked_on_the_span(settings))


async def _marked_on_the_span(settings):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = settings_from_env(
        {"FLASHSALE_REDIS_URL": settings.redis_url, "FLASHSALE_RATE_POLICIES": json.dumps(SHADOW_SALE)}
    )
    resources = open_resources(settings)
    try:
        client = ClientIdentity("198.51.100.9", None, {}, "x-api-key")
        for _ in range(3):
            with provider.get_tracer("test").start_as_current_span("request"):
                verdict = await resources.limiter.check("buy", client)
    finally:
        await close_resources(resources)
    assert verdict.admitted and verdict.shadow_violated == ["tight"] and verdict.violated == []
    last = exporter.get_finished_spans()[-1].attributes
    assert last["flashsale.limiter_outcome"] == "shadow_limited"
    assert list(last["flashsale.limiter_shadow_violated"]) == ["tight"]


def test_on_a_limiter_redis_of_its_own_a_refund_gives_a_shadow_limit_only_what_it_took(
    settings_env, fresh_db, redis
):
    policy = {
        "buy": {
            "limits": [
                {"name": "per-ip", "key": "ip", "capacity": 5, "refill_per_sec": 0.01},
                {"name": "tight", "key": "ip", "capacity": 1, "refill_per_sec": 0.01, "mode": "shadow"},
            ]
        }
    }
    limiter_url = settings_env["FLASHSALE_REDIS_URL"].rsplit("/", 1)[0] + "/1"
    env = {
        "FLASHSALE_RATE_POLICIES": json.dumps(policy),
        "FLASHSALE_LIMITER_REDIS_URL": limiter_url,
    }
    with TestClient(_app(settings_env, **env)) as client:
        assert client.app.state.resources.limiter.shares_main_redis is False
        assert client.post("/buy", json={}).status_code == 202  # tight: 1 -> 0, per-ip: 5 -> 4
        redis.set(gate_key(1), 0)
        assert client.post("/buy", json={}).status_code == 409  # charged on the limiter, refunded
    with Redis.from_url(limiter_url) as limiter_redis:
        full = {"per-ip": 5_000_000, "tight": 1_000_000}  # a missing bucket is full
        tokens = {
            name: int(limiter_redis.hget(client_bucket_key("buy", "ip:testclient", name), "t") or micro)
            // 1_000_000
            for name, micro in full.items()
        }
        limiter_redis.flushdb()
    assert tokens == {"per-ip": 4, "tight": 0}, "the shadow bucket, not charged, got nothing back"
