"""lua/token_buckets.lua on a real redis-server, checked against a pure-Python model."""

import multiprocessing
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from service.core.lua import SCRIPT_NAMES, load_scripts
from service.core.settings import REPO_ROOT
from tests.support.bucket_model import BucketModel

LUA_DIR = REPO_ROOT / "lua"
KEY = "fs:rl:{test:ip:203.0.113.7}:per-ip"
OTHER = "fs:rl:{test:ip:203.0.113.7}:burst"
MICRO = 1_000_000


def _caller(script):
    def call(*limits, keys=(KEY, OTHER), now=""):
        """Each limit is (capacity, refill per second, cost); returns the raw reply."""
        args = [now]
        for capacity, refill, cost in limits:
            args += [capacity, round(refill * MICRO), cost]
        return script(keys=list(keys[: len(limits)]), args=args)

    return call


@pytest.fixture
def buckets(redis):
    return _caller(load_scripts(redis, LUA_DIR).token_buckets)


@pytest.fixture
def refund(redis):
    return _caller(load_scripts(redis, LUA_DIR).refund_buckets)


def per_limit(reply, i):
    """(allowed, remaining, retry ms, full ms) of the i-th limit."""
    return tuple(reply[2 + 4 * i : 6 + 4 * i])


def test_every_script_documents_its_contract():
    index = (LUA_DIR / "README.md").read_text()
    for name in SCRIPT_NAMES:
        source = (LUA_DIR / f"{name}.lua").read_text()
        assert "KEYS[1" in source and "ARGV[1]" in source and "returns" in source, name
        assert f"`{name}.lua`" in index, name
    assert "`buckets.lib.lua`" in index


def test_a_full_bucket_admits_capacity_then_denies(buckets):
    replies = [buckets((5, 1, 1)) for _ in range(6)]
    assert [r[0] for r in replies] == [1, 1, 1, 1, 1, 0]
    assert [per_limit(r, 0)[1] for r in replies] == [4, 3, 2, 1, 0, 0]
    assert per_limit(replies[0], 0) == (1, 4, 0, 1000)
    allowed, remaining, retry_ms, full_ms = per_limit(replies[5], 0)
    assert (allowed, remaining) == (0, 0)
    assert 0 < retry_ms <= 1000 and 4000 < full_ms <= 5000


def test_replies_are_integers_and_carry_redis_time(buckets, redis):
    reply = buckets((3, 0.3, 1))
    assert all(isinstance(value, int) for value in reply)
    seconds, micros = redis.time()
    assert abs(seconds * MICRO + micros - reply[1]) < 5 * MICRO


def test_fractional_refill_rates(buckets):
    buckets((1, 0.5, 1))
    allowed, _, retry_ms, _ = per_limit(buckets((1, 0.5, 1)), 0)
    assert allowed == 0 and 1900 < retry_ms <= 2000


def test_tokens_come_back_with_redis_time(buckets):
    for _ in range(2):
        buckets((2, 20, 1))  # one token per 50 ms
    _, _, retry_ms, _ = per_limit(buckets((2, 20, 1)), 0)
    assert 0 < retry_ms <= 50
    started = time.monotonic()
    while per_limit(buckets((2, 20, 0)), 0)[1] < 1:
        assert time.monotonic() - started < 5, "no token came back"
        time.sleep(0.005)
    # No sooner than the script said (5 ms slack between Redis's clock and ours).
    assert (time.monotonic() - started) * 1000 >= retry_ms - 5
    assert buckets((2, 20, 1))[0] == 1


def test_the_bucket_expires_when_it_would_be_full(buckets, redis):
    buckets((5, 1, 1))
    assert 900 < redis.pttl(KEY) <= 1000
    for _ in range(4):
        buckets((5, 1, 1))
    assert 4900 < redis.pttl(KEY) <= 5000


def test_a_denied_or_free_call_writes_nothing(buckets, redis):
    buckets((5, 1, 0))
    assert not redis.exists(KEY)
    buckets((1, 1, 1))
    before = redis.hgetall(KEY)
    assert buckets((1, 1, 1))[0] == 0
    assert redis.hgetall(KEY) == before


def test_all_or_nothing_a_denial_by_the_second_limit_leaves_the_first_untouched(buckets, redis):
    buckets((10, 1, 1), (1, 0.001, 1))  # the second limit is now empty for ~1000 s
    before = redis.hgetall(KEY)
    reply = buckets((10, 1, 1), (1, 0.001, 1))
    assert reply[0] == 0
    assert per_limit(reply, 0)[:2] == (1, 9)  # the first would have allowed it...
    assert per_limit(reply, 1)[0] == 0  # ...the second did not
    assert redis.hgetall(KEY) == before  # so the first was not charged
    assert per_limit(buckets((10, 1, 0)), 0)[1] == 9


def test_script_flush_is_survived(buckets, redis):
    buckets((5, 1, 1))
    redis.script_flush()
    assert buckets((5, 1, 1))[0] == 1


def test_a_clock_that_steps_back_refills_nothing(buckets, redis):
    buckets((3, 1, 1))
    # As if the bucket was written by a primary whose clock ran an hour ahead.
    redis.hset(KEY, mapping={"t": 0, "ts": (int(time.time()) + 3600) * MICRO})
    assert buckets((3, 1, 1))[0] == 0


def _app_now(offset_seconds=0.0):
    return time.time_ns() // 1000 + int(offset_seconds * MICRO)


def test_with_the_app_clock_the_last_refill_time_never_moves_backwards(buckets, redis):
    # One token a second: the bucket lives a second or more, so it is still there to read.
    buckets((3, 1, 1), now=_app_now())
    stamp = int(redis.hget(KEY, "ts"))
    # A pod an hour behind: refills nothing, and cannot drag the refill time back.
    for _ in range(3):
        buckets((3, 1, 1), now=_app_now(-3600))
    assert int(redis.hget(KEY, "ts")) >= stamp


def test_with_the_app_clock_a_pod_hours_ahead_cannot_mint_tokens(buckets):
    for _ in range(3):
        assert buckets((3, 0.01, 1), now=_app_now())[0] == 1
    # One token per 100 s: a pod claiming it is 3 hours later gets nothing Redis did not see pass.
    assert buckets((3, 0.01, 1), now=_app_now(3 * 3600))[0] == 0
    assert buckets((3, 0.01, 1), now=_app_now())[0] == 0


def _hammer(redis_url: str, rounds: int, start) -> int:
    script = load_scripts(Redis.from_url(redis_url), LUA_DIR).token_buckets
    start.wait()
    # 0.001 tokens/s: not one token can come back while the test runs.
    return sum(script(keys=[KEY], args=["", 100, 1000, 1])[0] for _ in range(rounds))


def test_concurrent_processes_never_overdraw(redis, redis_url):
    context = multiprocessing.get_context("spawn")
    start = context.Manager().Event()
    with context.Pool(8) as pool:
        pending = [pool.apply_async(_hammer, (redis_url, 100, start)) for _ in range(8)]
        start.set()
        admitted = sum(result.get(timeout=60) for result in pending)
    assert admitted == 100


limit_strategy = st.tuples(
    st.integers(1, 20),  # capacity
    st.integers(1_000, 100_000_000),  # refill, micro-tokens per second (0.001 to 100 per second)
    st.integers(-4, 4),  # cost (negative: a limit in shadow)
).filter(lambda limit: abs(limit[2]) <= limit[0])
step_strategy = st.tuples(
    st.integers(0, 3),
    st.lists(limit_strategy, min_size=1, max_size=3),
    st.booleans(),  # refund the call when it was admitted (the main Redis said no)
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step_strategy, min_size=1, max_size=40))
def test_the_scripts_agree_with_the_model_on_every_decision_and_header(redis, steps):
    redis.flushall()
    scripts = load_scripts(redis, LUA_DIR)
    model = BucketModel()
    policies: dict[int, list] = {}
    for identity, limits, refunded in steps:
        # A key keeps its first limits, as a deployed policy does.
        limits = policies.setdefault(identity, limits)
        keys = [f"fs:rl:{{model:{identity}}}:l{i}" for i in range(len(limits))]
        args = [""] + [value for limit in limits for value in limit]
        reply = scripts.token_buckets(keys=keys, args=args)
        assert reply == model.call(reply[1], keys, limits), (identity, limits)
        if refunded and reply[0]:
            # As the limiter refunds: nothing to a shadow limit that had no room (it was not charged).
            refunds = [
                (capacity, rate, 0 if cost < 0 and not per_limit(reply, i)[0] else cost)
                for i, (capacity, rate, cost) in enumerate(limits)
            ]
            args = [""] + [value for limit in refunds for value in limit]
            limits = refunds
            reply = scripts.refund_buckets(keys=keys, args=args)
            assert reply == model.refund(reply[1], keys, limits), (identity, limits)


def test_a_refund_leaves_the_buckets_as_if_the_request_never_came(buckets, refund, redis):
    buckets((5, 0.01, 1), (3, 0.01, 2))
    reply = refund((5, 0.01, 1), (3, 0.01, 2))
    assert reply[0] == 1 and per_limit(reply, 0) == (1, 5, 0, 0) and per_limit(reply, 1) == (1, 3, 0, 0)
    assert not redis.exists(KEY, OTHER), "a full bucket is a missing one"


def test_a_refund_gives_back_only_its_own_cost(buckets, refund, redis):
    for _ in range(3):
        buckets((5, 0.01, 1))
    allowed, remaining, _, full_ms = per_limit(refund((5, 0.01, 1)), 0)
    assert (allowed, remaining) == (1, 3), "the two other requests stay charged"
    assert 199_000 < full_ms <= 200_000 and 199_000 < redis.pttl(KEY) <= 200_000
    # Each refund gives its own cost back, and none fills a bucket past its capacity.
    assert per_limit(refund((5, 0.01, 1)), 0)[1] == 4
    assert per_limit(refund((5, 0.01, 1)), 0)[1] == 5
    assert per_limit(refund((5, 0.01, 1)), 0)[1] == 5


def test_a_shadow_limit_never_denies_and_is_charged_only_while_it_has_room(buckets, redis):
    replies = [buckets((2, 0.01, -1)) for _ in range(4)]
    assert [r[0] for r in replies] == [1, 1, 1, 1], "never denies"
    assert [per_limit(r, 0)[:2] for r in replies] == [(1, 1), (1, 0), (0, 0), (0, 0)]
    assert per_limit(buckets((2, 0.01, 0)), 0)[1] == 0, "empty, not overdrawn"


def test_an_enforced_denial_charges_the_shadow_limit_nothing(buckets, redis):
    buckets((1, 0.01, 1))  # the enforced limit is now empty
    reply = buckets((1, 0.01, 1), (5, 0.01, -1))
    assert reply[0] == 0 and per_limit(reply, 1) == (1, 5, 0, 0)
    assert not redis.exists(OTHER), "all or nothing keeps its meaning for the enforced limits"
    reply = buckets((5, 0.01, 1), (1, 0.01, -1), keys=("fs:rl:{t:x}:a", "fs:rl:{t:x}:b"))
    reply = buckets((5, 0.01, 1), (1, 0.01, -1), keys=("fs:rl:{t:x}:a", "fs:rl:{t:x}:b"))
    assert reply[0] == 1 and per_limit(reply, 0)[1] == 3 and per_limit(reply, 1)[:2] == (0, 0)
