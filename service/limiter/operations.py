"""Sale-day operations on one client's buckets: read them without charging (inspect), refill
them (reset). The admin routes ``GET|DELETE /admin/limits/{route}/{client}`` call these.

A client is written as the limiter derives it: an IP address (``203.0.113.7``, ``2001:db8::1``),
``customer:<id>`` or ``api_key:<key>``. The limits shown are those of the route's policy (its
overrides applied) that count that identity, and the route's global limits; an address also
shows the limits a request from it falls back to when it carries no customer or key. A reset
refills the client's own buckets, never a global one (every client's).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
from redis import asyncio as aioredis

from service.core.channels import follow_channel
from service.core.keys import LIMIT_RESET_CHANNEL
from service.core.policies import LimitSpec
from service.limiter.client_ip import client_address, counted_network
from service.limiter.identity import ClientIdentity, identity_of
from service.limiter.ratelimit import Limiter, Outcome, Plan

UNDERIVED = "ip:"
"""What ``identity_of`` counts an ``ip`` limit by for a client given without an address."""


class InvalidClient(ValueError):
    """Not an address, ``customer:<id>`` or ``api_key:<key>``."""


class LimiterUnreachable(RuntimeError):
    """The limiter's Redis did not answer (or its circuit breaker is open)."""


@dataclass(frozen=True, slots=True)
class BucketView:
    limit: LimitSpec
    tokens: int
    """Whole tokens in the bucket now."""
    full_in_ms: int
    """Until the bucket is full again (0: full)."""


@dataclass(frozen=True, slots=True)
class ClientLimits:
    allow_listed: bool
    buckets: tuple[BucketView, ...]


MAX_CLIENT_CHARS = 300
"""The longest client an admin path may name (``customer:<id>`` or ``api_key:<key>`` included)."""
_FIELD_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]+")
"""What a header value may hold (RFC 9110: no control characters but a tab): a customer id or an
API key the limiter could ever be sent."""


def client_of(text: str, api_key_header: str, ipv6_prefix: int) -> ClientIdentity:
    """The client ``text`` names, as the limiter derives it from a request; ``InvalidClient`` for
    a text no request could be counted as: longer than ``MAX_CLIENT_CHARS``, an id or key that no
    header could carry (empty, control characters, spaces around it, which HTTP strips), an
    address with a zone. An IPv4-mapped address is its IPv4 address."""
    if len(text) > MAX_CLIENT_CHARS:
        raise InvalidClient(text)
    kind, sep, value = text.partition(":")
    if sep and kind in ("customer", "api_key"):
        if not _FIELD_VALUE.fullmatch(value) or value != value.strip(" \t"):
            raise InvalidClient(text)
        if kind == "customer":
            return ClientIdentity("", value, {}, api_key_header)
        return ClientIdentity("", None, {api_key_header: value}, api_key_header)
    address = client_address(text)
    if address is None:
        raise InvalidClient(text)
    ip = str(address)
    return ClientIdentity(ip, None, {}, api_key_header, counted_network(ip, ipv6_prefix))


def _plan(limiter: Limiter, route: str, client: ClientIdentity) -> Plan | None:
    """The client's plan, narrowed to the limits that count it (None: allow-listed)."""
    resolved = limiter.resolve(route, client)
    if resolved is Outcome.ALLOW_LISTED:
        return None
    if not isinstance(resolved, Plan):
        raise LookupError(route)
    kept = [
        i
        for i, limit in enumerate(resolved.policy.limits)
        if client.ip or identity_of(limit.key, client) != UNDERIVED
    ]
    limits = [resolved.policy.limits[i] for i in kept]
    return Plan(
        route, msgspec.structs.replace(resolved.policy, limits=limits), [resolved.keys[i] for i in kept]
    )


def _own(plan: Plan, client: ClientIdentity) -> Plan:
    """The plan without its global limits: they are every client's, not this one's to refill."""
    kept = [i for i, limit in enumerate(plan.policy.limits) if identity_of(limit.key, client) != "global"]
    limits = [plan.policy.limits[i] for i in kept]
    return Plan(plan.route, msgspec.structs.replace(plan.policy, limits=limits), [plan.keys[i] for i in kept])


async def inspect_client(limiter: Limiter, route: str, client: ClientIdentity) -> ClientLimits:
    """Each of the client's buckets on ``route``, refilled to now, nothing charged. Raises
    ``LookupError`` for a route without a policy, ``LimiterUnreachable``."""
    plan = _plan(limiter, route, client)
    if plan is None:
        return ClientLimits(True, ())
    if not plan.keys:
        return ClientLimits(False, ())
    states = await limiter.inspect(plan)
    if states is None:
        raise LimiterUnreachable()
    return ClientLimits(False, tuple(BucketView(s.limit, s.remaining, s.reset_ms) for s in states))


async def reset_client(
    limiter: Limiter, route: str, client: ClientIdentity, announce: Callable[[list[str]], Awaitable]
) -> ClientLimits:
    """Refill the client's own buckets on ``route`` (never a global one, shared by every
    client), and ``announce`` their keys, so other processes' deny caches let go of them; then
    as ``inspect_client``."""
    plan = _plan(limiter, route, client)
    if plan is not None and (plan := _own(plan, client)).keys:
        if not await limiter.reset(plan):
            raise LimiterUnreachable()
        await announce(plan.keys)
    return await inspect_client(limiter, route, client)


async def announce_reset(redis: aioredis.Redis, keys: list[str]) -> None:
    await redis.publish(LIMIT_RESET_CHANNEL, "\n".join(keys))


async def follow_limit_resets(redis: aioredis.Redis, limiter: Limiter) -> None:
    """Forget announced buckets in this process's deny cache (all of it after a lost connection)."""
    cache = limiter.deny_cache
    if cache is None:
        return
    await follow_channel(redis, LIMIT_RESET_CHANNEL, lambda data: cache.forget(data.split("\n")), cache.clear)
