"""Auto-pipelining: the calls of one Lua script that concurrent requests make in the same
turn of the event loop leave together, in one write (what ioredis calls auto-pipelining).

A single redis-py asyncio call spends most of its time in Python around the socket: the
pool, timeout wrappers and, above all, encoding its arguments (about 50 µs for admit.lua's
60). Here each call is encoded once, by hiredis, with the arguments that never change
(``PackedArgs``) encoded at start-up; a batch then costs one pool checkout, one write
and one read loop. Each caller gets its own reply or its own error. Nothing waits for a
fuller batch: a batch leaves on the next turn of the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import hiredis
from opentelemetry.trace import SpanKind
from redis import asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from service.core.metrics import PIPELINE_CALLS
from service.core.tracing import tracer, tracing_on

MAX_BATCH = 256
"""Calls per write; a larger burst goes out as several writes, on several connections."""


def resp_arguments(values: Sequence[Any]) -> bytes:
    """``values`` as RESP bulk strings: the body of a command, without its count. Encoded by
    hiredis (C, what redis-py itself uses when hiredis is installed)."""
    packed = hiredis.pack_command(tuple(values))
    return packed[packed.index(b"\r\n") + 2 :]


class PackedArgs(NamedTuple):
    """Trailing arguments that are the same for every call, encoded once."""

    count: int
    resp: bytes

    @classmethod
    def of(cls, values: Sequence[Any]) -> PackedArgs:
        return cls(len(values), resp_arguments(values))


NO_ARGS = PackedArgs(0, b"")


class CoalescedScript:
    """``await script(keys=…, args=…, tail=…)``, like redis-py's ``AsyncScript`` (EVALSHA,
    loading the script when Redis does not know it: a restart, a flush)."""

    def __init__(self, client: aioredis.Redis, source: str, name: str) -> None:
        self._client = client
        self._calls_per_write = PIPELINE_CALLS.labels(name)
        self._source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._waiting: list[tuple[bytes, asyncio.Future]] = []
        self._sending: set[asyncio.Task] = set()

    def __call__(
        self, keys: Sequence = (), args: Sequence = (), tail: PackedArgs = NO_ARGS
    ) -> asyncio.Future:
        count = 3 + len(keys) + len(args) + tail.count
        head = hiredis.pack_command(("EVALSHA", self.sha, len(keys), *keys, *args))
        command = b"*%d\r\n%b%b" % (count, head[head.index(b"\r\n") + 2 :], tail.resp)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((command, future))
        if len(self._waiting) == 1:
            task = loop.create_task(self._send_waiting())
            self._sending.add(task)  # held, so the loop cannot drop a batch mid-flight
            task.add_done_callback(self._sending.discard)
        return future

    async def _send_waiting(self) -> None:
        """Runs a turn of the loop after the first call: by then every request that was ready
        to call has called. Calls made meanwhile start the next batch while this one is out."""
        calls, self._waiting = self._waiting, []
        await asyncio.gather(*(self._send(calls[i : i + MAX_BATCH]) for i in range(0, len(calls), MAX_BATCH)))

    async def _send(self, batch: list[tuple[bytes, asyncio.Future]]) -> None:
        try:
            replies = await self._run([command for command, _ in batch])
        except Exception as exc:  # the connection failed: every caller of the batch learns why
            replies = [exc] * len(batch)
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its request was cancelled (the client went away)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _run(self, commands: list[bytes]) -> list[Any]:
        replies = await self._exchange(commands)
        unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if unknown:
            await self._client.script_load(self._source)
            for i, reply in zip(unknown, await self._exchange([commands[i] for i in unknown]), strict=True):
                replies[i] = reply
        return replies

    async def _exchange(self, commands: list[bytes]) -> list[Any]:
        if not tracing_on():
            return await self._write_and_read(commands)
        # The batch is one client span, in the context of the request that opened it.
        with tracer.start_as_current_span(
            "EVALSHA",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "redis",
                "db.statement": "EVALSHA",
                "db.redis.pipeline_length": len(commands),
            },
        ):
            return await self._write_and_read(commands)

    async def _write_and_read(self, commands: list[bytes]) -> list[Any]:
        self._calls_per_write.observe(len(commands))
        pool = self._client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(b"".join(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:  # this call's error; the others' replies follow
                    replies.append(exc)
            return replies
        except BaseException:
            await connection.disconnect()  # never hand back a connection with replies unread
            raise
        finally:
            await pool.release(connection)
