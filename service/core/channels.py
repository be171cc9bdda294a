"""Following a pub/sub channel of the main Redis for as long as the process lives."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis import asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
RESUBSCRIBE_SECONDS = 1.0


async def follow_channel(
    redis: aioredis.Redis,
    channel: str,
    on_message: Callable[[str], None],
    on_subscribed: Callable[[], None],
) -> None:
    """Call ``on_message`` with each message's data; ``on_subscribed`` after each (re)subscription,
    as anything may have been missed while not listening. Resubscribes after a lost connection."""
    while True:
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                on_subscribed()
                async for message in pubsub.listen():
                    if message["type"] != "message":
                        continue
                    try:
                        on_message(message["data"])
                    except Exception:  # one bad message must not end the following
                        log.exception("channel message not handled", extra={"channel": channel})
        except (RedisError, OSError) as exc:
            log.warning(
                "channel lost; resubscribing", extra={"channel": channel, "error": type(exc).__name__}
            )
            await asyncio.sleep(RESUBSCRIBE_SECONDS)
