"""The limiter's pieces without HTTP: breaker, deny cache, identities, keys, headers."""

import http_sf

from service.core.policies import LimitSpec, RoutePolicy
from service.limiter.breaker import BreakerState, CircuitBreaker
from service.limiter.deny_cache import DenyCache
from service.limiter.identity import ClientIdentity, identity_of
from service.limiter.ratelimit import LimitState, Outcome, Verdict, bucket_keys, ratelimit_headers


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_breaker_opens_after_repeated_failures_and_probes_after_the_cooldown():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=2, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 2
    assert breaker.allow() and breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow(), "one probe at a time"
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 2
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_a_success_resets_the_failure_count():
    breaker = CircuitBreaker(failure_threshold=2, cooldown_seconds=1, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_the_deny_cache_forgets_a_key_when_its_time_is_up():
    clock = Clock()
    cache = DenyCache(clock=clock)
    cache.deny("a", 1.5)
    assert cache.remaining(["x", "a"]) == ("a", 1.5)
    clock.now += 1.5
    assert cache.remaining(["a"]) is None
    assert len(cache) == 0


def test_the_deny_cache_is_bounded():
    clock = Clock()
    cache = DenyCache(max_entries=3, clock=clock)
    for key in "abcd":
        cache.deny(key, 10)
    assert len(cache) == 3
    assert cache.remaining(["a"]) is None  # the oldest made room
    assert cache.remaining(["d"]) is not None


def test_a_refund_makes_the_deny_cache_forget_its_buckets():
    cache = DenyCache(clock=Clock())
    cache.deny("a", 10)
    cache.deny("b", 10)
    cache.forget(["a", "c"])
    assert cache.remaining(["a"]) is None and cache.remaining(["b"]) == ("b", 10)


def _client(ip="203.0.113.7", customer=None, headers=None):
    return ClientIdentity(ip, customer, headers or {}, "x-api-key")


def test_identities_hash_what_clients_send_and_fall_back_to_the_ip():
    client = _client(customer="cus_42", headers={"x-api-key": "secret-key", "x-tenant": "{acme}"})
    assert identity_of("ip", client) == "ip:203.0.113.7"
    assert identity_of("global", client) == "global"
    for kind in ("customer", "api_key", "header:X-Tenant"):
        value = identity_of(kind, client)
        assert value.startswith(f"{kind}:") and len(value) == len(kind) + 25
        assert "secret" not in value and "{" not in value and "cus_42" not in value
    assert identity_of("customer", _client()) == "ip:203.0.113.7"
    assert identity_of("header:x-tenant", _client()) == "ip:203.0.113.7"


def _policy(*limits, fail="closed"):
    return RoutePolicy([LimitSpec(name, key, cap, refill) for name, key, cap, refill in limits], fail)


def test_keys_of_one_identity_spread_over_the_cluster_and_mixed_ones_share_a_slot():
    one = _policy(("per-ip", "ip", 5, 1), ("burst", "ip", 20, 10))
    assert bucket_keys("buy", one, _client()) == [
        "fs:rl:{buy:ip:203.0.113.7}:per-ip",
        "fs:rl:{buy:ip:203.0.113.7}:burst",
    ]
    mixed = _policy(("per-ip", "ip", 5, 1), ("sale", "global", 100, 10))
    assert bucket_keys("buy", mixed, _client()) == [
        "fs:rl:{buy}:per-ip:ip:203.0.113.7",
        "fs:rl:{buy}:sale:global",
    ]


def test_headers_are_valid_structured_fields():
    policy = _policy(("per-ip", "ip", 5, 1), ("sale", "global", 100, 50))
    limited = Verdict(
        Outcome.LIMITED,
        policy,
        (LimitState(policy.limits[0], False, 0, 800, 5000), LimitState(policy.limits[1], True, 99, 0, 20)),
    )
    headers = ratelimit_headers(limited, legacy=True)
    assert http_sf.parse(headers["RateLimit-Policy"].encode(), tltype="list") == [
        ("per-ip", {"q": 5, "w": 5}),
        ("sale", {"q": 100, "w": 2}),
    ]
    assert http_sf.parse(headers["RateLimit"].encode(), tltype="list") == [
        ("per-ip", {"r": 0, "t": 1}),
        ("sale", {"r": 99, "t": 1}),
    ]
    assert headers["Retry-After"] == "1"
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"], headers["X-RateLimit-Reset"]) == (
        "5",
        "0",
        "1",
    )
    admitted = Verdict(Outcome.ADMITTED, policy, limited.states)
    assert "Retry-After" not in ratelimit_headers(admitted)
    assert "X-RateLimit-Limit" not in ratelimit_headers(admitted)


def test_retry_after_waits_for_every_violated_limit():
    policy = _policy(("a", "ip", 1, 1), ("b", "ip", 1, 1))
    verdict = Verdict(
        Outcome.LIMITED,
        policy,
        (LimitState(policy.limits[0], False, 0, 1200, 0), LimitState(policy.limits[1], False, 0, 3400, 0)),
    )
    assert verdict.retry_after_seconds == 4
    assert verdict.violated == ["a", "b"]
