"""Auto-pipelined script calls on a real Redis: batching, each caller's own reply or error,
the script reloaded after a flush, a lost connection reported to every caller."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from redis.asyncio.connection import Connection

from service.core.auto_pipeline import CoalescedScript, PackedArgs, resp_arguments
from service.core.redis_clients import main_redis
from service.core.settings import Settings

ECHO = "return {KEYS, ARGV}"
FAIL_ON_BOOM = "if ARGV[1] == 'boom' then return redis.error_reply('boom') end return ARGV[1]"


def _run(coroutine):
    return asyncio.run(coroutine)


async def _calls(redis_url: str, source: str, calls: list[tuple[list, list]], tail=None):
    client = main_redis(Settings(redis_url=redis_url))
    try:
        script = CoalescedScript(client, source, name="echo")
        extra = {"tail": tail} if tail else {}
        return await asyncio.gather(
            *(script(keys=keys, args=args, **extra) for keys, args in calls), return_exceptions=True
        )
    finally:
        await client.aclose()


def _batches(script: str) -> tuple[float, float]:
    """(writes, calls) the pipeline-size histogram counted for ``script``."""
    labels = {"script": script}
    count = REGISTRY.get_sample_value("flashsale_redis_pipeline_calls_count", labels) or 0.0
    return count, REGISTRY.get_sample_value("flashsale_redis_pipeline_calls_sum", labels) or 0.0


def test_concurrent_calls_leave_together_and_each_gets_its_own_reply(redis, redis_url):
    redis.script_load(ECHO)
    writes, sent = _batches("echo")
    calls = [([f"k{i}"], [f"a{i}", i]) for i in range(300)]
    replies = _run(_calls(redis_url, ECHO, calls, tail=PackedArgs.of(["same", 7])))
    assert replies == [[[f"k{i}"], [f"a{i}", str(i), "same", "7"]] for i in range(300)]
    # 300 calls made in one turn of the loop: two writes (MAX_BATCH is 256), each call sent once.
    assert _batches("echo") == (writes + 2, sent + 300)


def test_calls_that_meet_noscript_are_sent_again_once_the_script_is_loaded(redis, redis_url):
    """One write of 100 calls after a flush: every call meets NOSCRIPT, the script is loaded,
    and the calls go again in one more write. (With two writes in flight, one write's load can
    land among the other's calls, so how many of those meet NOSCRIPT is a race: one write here.)"""
    redis.script_flush()
    writes, sent = _batches("echo")
    calls = [([f"k{i}"], [f"a{i}"]) for i in range(100)]
    replies = _run(_calls(redis_url, ECHO, calls))
    assert replies == [[[f"k{i}"], [f"a{i}"]] for i in range(100)]
    assert _batches("echo") == (writes + 2, sent + 200)


def test_one_callers_error_is_its_own(redis, redis_url):
    replies = _run(_calls(redis_url, FAIL_ON_BOOM, [([], ["fine"]), ([], ["boom"]), ([], ["also fine"])]))
    assert replies[0] == "fine" and replies[2] == "also fine"
    assert isinstance(replies[1], Exception) and "boom" in str(replies[1])


def test_a_flushed_script_is_loaded_again(redis, redis_url):
    async def twice():
        client = main_redis(Settings(redis_url=redis_url))
        try:
            script = CoalescedScript(client, ECHO, name="echo")
            first = await script(keys=["a"], args=["1"])
            redis.script_flush()
            return first, await script(keys=["b"], args=["2"])
        finally:
            await client.aclose()

    assert _run(twice()) == ([["a"], ["1"]], [["b"], ["2"]])


def test_every_caller_hears_of_a_lost_connection(redis_url):
    from redis.exceptions import ConnectionError as RedisConnectionError

    async def unreachable():
        client = main_redis(Settings(redis_url="redis://127.0.0.1:1/0"))  # nothing listens on port 1
        try:
            script = CoalescedScript(client, ECHO, name="echo")
            return await asyncio.gather(*(script(args=[str(i)]) for i in range(5)), return_exceptions=True)
        finally:
            await client.aclose()

    replies = _run(unreachable())
    assert len(replies) == 5 and all(isinstance(r, RedisConnectionError) for r in replies)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=40), st.binary(max_size=40), st.integers(min_value=-(2**63), max_value=2**63 - 1)
        ),
        max_size=12,
    )
)
def test_the_encoder_writes_what_redis_py_writes(values):
    command = ["EVALSHA", "0" * 40, 0, *values]
    ours = b"*%d\r\n" % len(command) + resp_arguments(command)
    assert ours == b"".join(Connection().pack_command(*command))


def test_connections_the_server_closed_are_replaced_before_use():
    """A Redis restart closes every pooled connection; each would fail the first call that took
    it (a 503 long after Redis was back) had the pool not replaced it at checkout."""
    from service.cli.dev_servers import restartable_redis

    async def calls_after_restart(server) -> list:
        client = main_redis(Settings(redis_url=server.url))
        try:
            script = CoalescedScript(client, ECHO, name="echo")
            pool = client.connection_pool
            held = [await pool.get_connection() for _ in range(8)]  # eight pooled, idle connections
            for connection in held:
                await pool.release(connection)
            server.restart()
            async with asyncio.timeout(5):  # until this process has seen each one closed
                while not all([await connection.can_read() for connection in held]):
                    await asyncio.sleep(0.01)
            replies = []
            for i in range(len(held)):  # one at a time: each call takes a connection of its own
                replies.append(await asyncio.gather(script(keys=[], args=[i]), return_exceptions=True))
                await pool.get_connection()  # keep the used one out, so the next call takes a stale one
            return [reply[0] for reply in replies]
        finally:
            await client.aclose()

    with restartable_redis() as server:
        replies = _run(calls_after_restart(server))
    assert replies == [[[], [str(i)]] for i in range(8)]
