"""lua/token_bucket.lua on a real redis-server."""

import asyncio
import multiprocessing
import time

import pytest
from redis import Redis
from redis import asyncio as aioredis

from service.lua import SCRIPT_NAMES, load_scripts
from service.ratelimit import Limit, bucket_key, ratelimit_headers, take
from service.settings import REPO_ROOT

LUA_DIR = REPO_ROOT / "lua"
KEY = "fs:rl:{test:ip:203.0.113.7}"
MICRO = 1_000_000


@pytest.fixture
def bucket(redis):
    scripts = load_scripts(redis, LUA_DIR)

    def call(capacity=5, refill_per_sec=1.0, cost=1, key=KEY):
        return scripts.token_bucket(keys=[key], args=[capacity, round(refill_per_sec * MICRO), cost])

    return call


def test_every_script_documents_its_contract():
    for name in SCRIPT_NAMES:
        source = (LUA_DIR / f"{name}.lua").read_text()
        assert "KEYS[1]" in source and "ARGV[1]" in source and "returns" in source, name
        assert name in (LUA_DIR / "README.md").read_text()


def test_a_full_bucket_admits_capacity_then_denies(bucket):
    replies = [bucket() for _ in range(6)]
    assert [r[0] for r in replies] == [1, 1, 1, 1, 1, 0]
    assert [r[1] for r in replies] == [4, 3, 2, 1, 0, 0]
    assert replies[0][2] == 0 and replies[0][3] == 1000  # one token to refill at 1/s
    _, _, retry_ms, full_ms = replies[5]
    assert 0 < retry_ms <= 1000
    assert 4000 < full_ms <= 5000


def test_replies_are_integers(bucket):
    assert all(isinstance(value, int) for value in bucket(refill_per_sec=0.3))


def test_fractional_refill_rates(bucket):
    bucket(capacity=1, refill_per_sec=0.5)
    allowed, _, retry_ms, _ = bucket(capacity=1, refill_per_sec=0.5)
    assert allowed == 0
    assert 1900 < retry_ms <= 2000


def test_tokens_come_back_with_redis_time(bucket):
    for _ in range(2):
        bucket(capacity=2, refill_per_sec=20)  # one token per 50 ms
    allowed, _, retry_ms, _ = bucket(capacity=2, refill_per_sec=20)
    assert allowed == 0 and 0 < retry_ms <= 50
    started = time.monotonic()
    deadline = started + 5
    while bucket(capacity=2, refill_per_sec=20, cost=0)[1] < 1:
        assert time.monotonic() < deadline, "no token came back"
        time.sleep(0.005)
    # The token is back no sooner than the script said (5 ms slack for the two clocks).
    assert (time.monotonic() - started) * 1000 >= retry_ms - 5
    assert bucket(capacity=2, refill_per_sec=20)[0] == 1


def test_the_bucket_expires_when_it_would_be_full(bucket, redis):
    bucket(capacity=5, refill_per_sec=1)
    assert 900 < redis.pttl(KEY) <= 1000
    for _ in range(4):
        bucket(capacity=5, refill_per_sec=1)
    assert 4900 < redis.pttl(KEY) <= 5000


def test_a_denied_or_free_call_writes_nothing(bucket, redis):
    bucket(cost=0)
    assert not redis.exists(KEY)
    bucket(capacity=1)
    before = redis.hgetall(KEY)
    assert bucket(capacity=1)[0] == 0
    assert redis.hgetall(KEY) == before


def test_script_flush_is_survived(bucket, redis):
    bucket()
    redis.script_flush()
    assert bucket()[0] == 1


def test_a_clock_that_steps_back_refills_nothing(bucket, redis):
    bucket(capacity=3)
    # Pretend the bucket was written by a primary whose clock ran an hour ahead.
    redis.hset(KEY, mapping={"t": 0, "ts": (int(time.time()) + 3600) * MICRO})
    assert bucket(capacity=3)[0] == 0


def _hammer(redis_url: str, rounds: int, start: multiprocessing.Event) -> int:
    scripts = load_scripts(Redis.from_url(redis_url), LUA_DIR)
    start.wait()
    # 0.001 tokens/s: not one token can come back while the test runs.
    return sum(scripts.token_bucket(keys=[KEY], args=[100, 1000, 1])[0] for _ in range(rounds))


def test_concurrent_processes_never_overdraw(redis, redis_url):
    context = multiprocessing.get_context("spawn")
    start = context.Manager().Event()
    with context.Pool(8) as pool:
        pending = [pool.apply_async(_hammer, (redis_url, 100, start)) for _ in range(8)]
        start.set()
        admitted = sum(result.get(timeout=60) for result in pending)
    assert admitted == 100


def test_take_and_headers(redis_url, redis):
    async def run():
        client = aioredis.Redis.from_url(redis_url)
        scripts = load_scripts(client, LUA_DIR)
        limit = Limit("buy", capacity=2, refill_per_sec=1)
        decisions = [await take(scripts, limit, "ip:198.51.100.1") for _ in range(3)]
        await client.aclose()
        return limit, decisions

    limit, (first, _, denied) = asyncio.run(run())
    assert redis.exists(bucket_key(limit, "ip:198.51.100.1"))
    assert first.allowed and first.remaining == 1
    assert not denied.allowed and denied.retry_after_seconds == 1
    headers = ratelimit_headers(limit, denied)
    assert headers["RateLimit-Policy"] == '"buy";q=2;w=2'
    assert headers["RateLimit"] == '"buy";r=0;t=1'
    assert headers["Retry-After"] == "1"
    assert "Retry-After" not in ratelimit_headers(limit, first)
