"""Before a sale opens, each API process latches "not open yet": the flood before a drop gets its
409 sale-not-open from memory, until the opening by admit.lua's clock or a sale change."""

import time

import httpx
import pytest
from litestar.testing import TestClient
from prometheus_client import REGISTRY

from service.api.app import create_app
from service.cli.dev_servers import wait_until
from service.core.keys import GATE_CHANNEL, sale_key
from service.sale.latches import EARLY_SECONDS, LATCH_SECONDS, NotOpenLatch, SoldOutLatch
from service.sale.stock_gate import seed
from tests.support.redis_monitor import background, commands_run


def _opens_in(redis, seconds: float) -> int:
    """Set product 1's opening ``seconds`` from now (as admit.lua reads it); returns it, ms."""
    opens_ms = int((time.time() + seconds) * 1000)
    redis.hset(sale_key(1), "opens_ms", opens_ms)
    return opens_ms


def _latch_answers() -> float:
    return REGISTRY.get_sample_value("flashsale_not_open_latch_answers_total") or 0.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_latch_counts_from_before_the_call_so_a_late_reply_never_holds_past_the_opening():
    clock = FakeClock()
    latch = NotOpenLatch(clock)
    opens_at_ms, said_at_us = 10_000, 9_000_000  # admit.lua: one second left
    mark = latch.mark()
    clock.now += 0.9  # the reply comes 0.9 s after the call
    latch.latch(1, mark, opens_at_ms, said_at_us)
    assert latch.opens_at_ms(1) == opens_at_ms
    clock.now = 100.0 + 1 - EARLY_SECONDS  # the opening, by the call's moment, less the margin
    assert latch.opens_at_ms(1) is None, "let go before the opening, however late the reply"

    far = latch.mark()
    latch.latch(1, far, 3_600_000, said_at_us)
    clock.now = far.at + LATCH_SECONDS - 0.01
    assert latch.opens_at_ms(1) == 3_600_000
    clock.now = far.at + LATCH_SECONDS
    assert latch.opens_at_ms(1) is None, "at most LATCH_SECONDS at a time"


@pytest.mark.parametrize("kind", ["not open", "sold out"])
def test_an_answer_overtaken_by_a_clear_latches_nothing(kind):
    """admit.lua answered before a restock or sale change was announced; the answer is handled
    after the announcement cleared the latch: it must not latch the old state again."""
    latch = NotOpenLatch(FakeClock()) if kind == "not open" else SoldOutLatch(FakeClock())
    mark = latch.mark()
    latch.clear(1)
    if kind == "not open":
        latch.latch(1, mark, 3_600_000, 0)
        assert latch.opens_at_ms(1) is None
    else:
        latch.latch(1, mark)
        assert not latch.is_sold_out(1)
    again = latch.mark()  # the next request, after the clear, latches as before
    if kind == "not open":
        latch.latch(1, again, 3_600_000, 0)
        assert latch.opens_at_ms(1) == 3_600_000
    else:
        latch.latch(1, again)
        assert latch.is_sold_out(1)


@pytest.fixture
def client(settings, fresh_db):
    with TestClient(create_app(settings)) as client:
        yield client


def test_before_the_opening_a_latched_409_calls_no_redis_and_reads_like_the_full_path(
    client, redis, redis_url
):
    _opens_in(redis, 3600)
    from_redis = client.post("/buy", json={"product_id": 1})
    assert from_redis.status_code == 409
    assert from_redis.json()["type"] == "urn:flashsale:problem:sale-not-open"
    answered = _latch_answers()
    with commands_run(redis_url) as commands:
        latched = [client.post("/buy", json={"product_id": 1}) for _ in range(3)] + [client.post("/buy")]
    assert [command for command in commands if not background(command)] == []
    assert _latch_answers() == answered + 4
    for answer in latched:
        assert (answer.status_code, answer.json()) == (409, from_redis.json())
        assert answer.headers["content-type"] == "application/problem+json"
        assert int(from_redis.headers["retry-after"]) - 1 <= int(answer.headers["retry-after"])


def test_a_request_with_an_idempotency_key_still_asks_redis(client, redis, redis_url):
    """It may be the retry of an order admitted before a sale change: only admit.lua knows."""
    _opens_in(redis, 3600)
    assert client.post("/buy", json={}).status_code == 409
    with commands_run(redis_url) as commands:
        keyed = client.post("/buy", json={}, headers={"idempotency-key": "k-1"})
    assert keyed.status_code == 409
    assert any("EVALSHA" in command.upper() for command in commands if not background(command))


def test_the_latch_lets_buyers_through_at_the_opening(client, redis):
    opens_ms = _opens_in(redis, 1.5)
    assert client.post("/buy", json={}).status_code == 409
    answered = _latch_answers()
    first_yes: list[float] = []

    def admitted() -> bool:
        if client.post("/buy", json={}).status_code == 202:
            first_yes.append(time.time())
        return bool(first_yes)

    wait_until(admitted, 5, "a 202 after the opening", interval=0.01)
    assert _latch_answers() > answered, "the latch answered meanwhile"
    assert opens_ms / 1000 <= first_yes[0] < opens_ms / 1000 + 0.5


@pytest.mark.slow
def test_a_sale_change_clears_the_latch_on_every_replica(system, fresh_db, redis):
    seed(fresh_db, redis, stock=10)
    system.start_apis(2)
    _opens_in(redis, 3600)
    for i, url in enumerate(system.urls):
        answer = httpx.post(f"{url}/buy", json={}, headers={"x-forwarded-for": f"203.0.113.{i}"})
        assert answer.status_code == 409  # latched for 5 s (LATCH_SECONDS)

    with redis.pipeline(transaction=True) as pipe:  # what a sale change does (publish_product)
        pipe.hdel(sale_key(1), "opens_ms")
        pipe.publish(GATE_CHANNEL, 1)
        pipe.execute()
    started = time.monotonic()
    for i, url in enumerate(system.urls):
        wait_until(
            lambda u=url, n=i: (
                httpx.post(
                    f"{u}/buy", json={}, headers={"x-forwarded-for": f"203.0.113.{10 + n}"}
                ).status_code
                == 202
            ),
            2,
            f"replica {i} open",
        )
    assert time.monotonic() - started < 2, "the announcement, not the latch's lapse"
