"""The limiter through the HTTP API in-process: several limits, identities, headers, deny cache."""

import json

import http_sf
from litestar.testing import TestClient

from service.api.app import create_app
from service.core.settings import settings_from_env

API_KEY_AND_GLOBAL = {
    "buy": {
        "limits": [
            {"name": "per-key", "key": "api_key", "capacity": 3, "refill_per_sec": 0.01},
            {"name": "sale", "key": "global", "capacity": 4, "refill_per_sec": 0.01},
        ]
    }
}


def test_several_limits_are_charged_all_or_nothing(settings_env, fresh_db):
    settings = settings_from_env({**settings_env, "FLASHSALE_RATE_POLICIES": json.dumps(API_KEY_AND_GLOBAL)})
    with TestClient(create_app(settings)) as client:

        def buy(key):
            return client.post("/buy", json={}, headers={"x-api-key": key})

        assert [buy("key-a").status_code for _ in range(3)] == [202] * 3
        denied = buy("key-a")
        assert denied.status_code == 429 and denied.json()["violated"] == ["per-key"]
        # The denial charged nothing: the global bucket still has its fourth token for key-b.
        assert buy("key-b").status_code == 202
        denied = buy("key-c")
        assert denied.status_code == 429 and denied.json()["violated"] == ["sale"]
        assert http_sf.parse(denied.headers["ratelimit-policy"].encode(), tltype="list") == [
            ("per-key", {"q": 3, "w": 300}),
            ("sale", {"q": 4, "w": 400}),
        ]
        assert http_sf.parse(denied.headers["ratelimit"].encode(), tltype="list")[1][1]["r"] == 0


def test_a_cached_denial_needs_no_redis_call(settings_env, fresh_db, redis):
    calls = lambda: redis.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)  # noqa: E731
    with TestClient(create_app(settings_from_env(settings_env))) as client:
        statuses = [client.post("/buy", json={}).status_code for _ in range(6)]
        assert statuses == [202] * 5 + [429]
        before = calls()
        for _ in range(20):
            response = client.post("/buy", json={})
            assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
        assert calls() == before
        assert 'outcome="limited_cached"' in client.get("/metrics").text


def test_without_the_deny_cache_every_denial_asks_redis(settings_env, fresh_db, redis):
    calls = lambda: redis.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)  # noqa: E731
    settings = settings_from_env({**settings_env, "FLASHSALE_LIMITER_DENY_CACHE": "false"})
    with TestClient(create_app(settings)) as client:
        for _ in range(6):
            client.post("/buy", json={})
        before = calls()
        for _ in range(5):
            assert client.post("/buy", json={}).status_code == 429
        assert calls() - before >= 5


def test_legacy_headers_on_request(settings_env, fresh_db):
    settings = settings_from_env({**settings_env, "FLASHSALE_RATE_LEGACY_HEADERS": "true"})
    with TestClient(create_app(settings)) as client:
        response = client.post("/buy", json={})
        assert (response.headers["x-ratelimit-limit"], response.headers["x-ratelimit-remaining"]) == (
            "5",
            "4",
        )
        assert response.headers["x-ratelimit-reset"] == "1"
