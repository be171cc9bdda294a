"""Which commands Redis ran during a block of a test, as MONITOR shows them, and which of those
an API process sends on its own, whatever its requests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis

from service.core.keys import STATS_KEY_PREFIX

# What an API process sends to Redis on its own, whatever its requests: the queue gauges
# (service/sale/queue_gauges.py, every 2 s: one MULTI of TIME, ZCARD and ZRANGE, then LLEN and
# ZCOUNT), the flush of the answers' outcome counts (service/sale/stats.py, once a second),
# and the handshake of any connection its pool opens (seen once in eight runs; a request's
# own call on such a connection would still show as a command of its own).
BACKGROUND_COMMANDS = {
    ("HELLO", "3"),
    ("CLIENT", "SETINFO"),
    ("MULTI", None),
    ("TIME", None),
    ("EXEC", None),
    ("ZCARD", "fs:admitted"),
    ("ZRANGE", "fs:admitted"),
    ("LLEN", "rq:queue:orders"),
    ("ZCOUNT", "rq:wip:orders"),
}


def background(command: str) -> bool:
    name, *args = command.split(" ")
    key = args[0] if args else None
    if name.upper() in ("HINCRBY", "EXPIRE"):
        return key.startswith(STATS_KEY_PREFIX)
    return (name.upper(), key) in BACKGROUND_COMMANDS


@contextmanager
def commands_run(redis_url: str) -> Iterator[list[str]]:
    """Every command Redis runs during the block, as MONITOR shows it: the block is marked in
    MONITOR's stream by an ECHO before and after it, so nothing outside it counts."""
    marker = f"window-{uuid.uuid4().hex}"
    seen: list[str] = []
    with Redis.from_url(redis_url, socket_timeout=10) as watcher, watcher.monitor() as monitor:
        with Redis.from_url(redis_url) as marks:
            marks.echo(f"{marker} opens")
            yield seen
            marks.echo(f"{marker} closes")
        while monitor.next_command()["command"] != f"ECHO {marker} opens":
            pass
        while (command := monitor.next_command()["command"]) != f"ECHO {marker} closes":
            seen.append(command)
