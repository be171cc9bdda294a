"""lua/reserve_stock.lua: the stock gate never hands out more units than it holds."""

import asyncio

from service.lua import load_scripts
from service.resources import async_redis_client
from service.settings import REPO_ROOT
from service.stock_gate import gate_key, release, reserve, set_gate


def _with_scripts(redis_url, body):
    async def run():
        client = async_redis_client(redis_url)
        try:
            return await body(client, load_scripts(client, REPO_ROOT / "lua"))
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_reserve_takes_all_or_nothing(redis, redis_url):
    set_gate(redis, 7, 3)

    async def body(client, scripts):
        return [await reserve(scripts, 7, 2), await reserve(scripts, 7, 2), await reserve(scripts, 7, 1)]

    two, too_many, last = _with_scripts(redis_url, body)
    assert (two.reserved, two.left) == (True, 1)
    assert (too_many.reserved, too_many.left) == (False, 1)
    assert (last.reserved, last.left) == (True, 0)
    assert int(redis.get(gate_key(7))) == 0


def test_a_missing_gate_is_reported_not_invented(redis, redis_url):
    async def body(client, scripts):
        return await reserve(scripts, 8, 1)

    reservation = _with_scripts(redis_url, body)
    assert reservation.gate_missing and not reservation.reserved
    assert not redis.exists(gate_key(8))


def test_thousands_of_concurrent_reservations_hand_out_exactly_the_stock(redis, redis_url):
    set_gate(redis, 9, 250)

    async def body(client, scripts):
        results = await asyncio.gather(*(reserve(scripts, 9, 1) for _ in range(2000)))
        return sum(r.reserved for r in results)

    assert _with_scripts(redis_url, body) == 250
    assert int(redis.get(gate_key(9))) == 0


def test_release_gives_units_back(redis):
    set_gate(redis, 10, 0)
    release(redis, 10, 2)
    assert int(redis.get(gate_key(10))) == 2
