"""The rate limiter: one atomic Lua call checks and charges every limit of a route's policy.

Around that call: a local deny cache (429 without Redis while a bucket is known empty), a
timeout and a circuit breaker (a dead Redis never makes requests hang), and the route's
failure mode (closed: 503; open: admit and count it). When the buckets live on a Redis of their
own, a request the main Redis refuses after the limits admitted it gets its tokens back
(``refund``), so a "no" charges nothing there too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from enum import StrEnum
from functools import cache

from opentelemetry import trace
from redis.exceptions import RedisError

from service.core.keys import client_bucket_key, route_bucket_key
from service.core.lua import Scripts
from service.core.metrics import LIMITER_DECISIONS, LIMITER_DEGRADED, RATE_POLICY_LOADED
from service.core.policies import LimitSpec, Policies, RoutePolicy, policy_digest
from service.core.settings import Settings
from service.core.tracing import record
from service.limiter.breaker import BreakerState, CircuitBreaker
from service.limiter.deny_cache import DenyCache
from service.limiter.identity import ClientIdentity, identity_of
from service.limiter.overrides import RouteIndex

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    ADMITTED = "admitted"
    LIMITED = "limited"
    SHADOW_LIMITED = "shadow_limited"
    """Admitted, though a limit in shadow mode would have denied it."""
    FAILED_OPEN = "failed_open"
    """Redis could not decide and the route fails open: admitted, uncounted."""
    FAILED_CLOSED = "failed_closed"
    """Redis could not decide and the route fails closed: 503."""
    UNLIMITED = "unlimited"
    """The route has no policy."""
    ALLOW_LISTED = "allow_listed"
    """The client is on the route's allow list: never limited."""


ADMITTING = frozenset(
    (Outcome.ADMITTED, Outcome.SHADOW_LIMITED, Outcome.FAILED_OPEN, Outcome.UNLIMITED, Outcome.ALLOW_LISTED)
)


@dataclass(frozen=True, slots=True)
class LimitState:
    limit: LimitSpec
    allowed: bool
    remaining: int
    retry_after_ms: int
    reset_ms: int


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    policy: RoutePolicy | None = None
    states: tuple[LimitState, ...] = ()
    cached: bool = False

    @property
    def admitted(self) -> bool:
        return self.outcome in ADMITTING

    @property
    def enforced(self) -> tuple[LimitState, ...]:
        """The states of the enforced limits: what a client is told of."""
        return tuple(state for state in self.states if not state.limit.shadow)

    @property
    def violated(self) -> list[str]:
        return [state.limit.name for state in self.enforced if not state.allowed]

    @property
    def shadow_violated(self) -> list[str]:
        """Limits in shadow mode that would have denied this request."""
        return [s.limit.name for s in self.states if s.limit.shadow and not s.allowed]

    @property
    def retry_after_seconds(self) -> int:
        """Whole seconds, rounded up, until every violated limit has room again (at least 1)."""
        longest = max((s.retry_after_ms for s in self.enforced if not s.allowed), default=0)
        return max(1, math.ceil(longest / 1000))


def bucket_keys(route: str, policy: RoutePolicy, client: ClientIdentity) -> list[str]:
    """One key per limit, all under one hash tag so the script runs on one Cluster slot.

    When every limit counts the same identity, the tag includes it and buckets spread over
    the cluster; a policy mixing identities (say per-IP and global) shares one slot per route.
    """
    identities = [identity_of(limit.key, client) for limit in policy.limits]
    if len(set(identities)) == 1:
        return [client_bucket_key(route, identities[0], limit.name) for limit in policy.limits]
    return [
        route_bucket_key(route, limit.name, identity)
        for limit, identity in zip(policy.limits, identities, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class Plan:
    """A route's policy and the buckets one client's request touches."""

    route: str
    policy: RoutePolicy
    keys: list[str]


@dataclass(frozen=True, slots=True)
class ActivePolicy:
    """The policies a process enforces now, and since when (for ``/readyz`` and the gauge)."""

    policies: Policies
    digest: str
    loaded_at: float
    """Unix seconds."""
    indexes: dict[str, RouteIndex]
    """Each route's policy with its allow list and overrides indexed."""


def prepare(policies: Policies, ipv6_prefix: int) -> ActivePolicy:
    """The policies ready to enforce, their indexes built (thread-safe: a reload builds off the
    event loop; ``Limiter.apply`` then only swaps it in)."""
    indexes = {route: RouteIndex(policy, ipv6_prefix) for route, policy in policies.items()}
    return ActivePolicy(policies, policy_digest(policies), time.time(), indexes)


class Limiter:
    def __init__(self, scripts: Scripts, settings: Settings, redis=None) -> None:
        self._redis = redis
        """The limiter's Redis, for ``reset`` (the scripts are bound to it too)."""
        self._script = scripts.token_buckets
        self._refund_script = scripts.refund_buckets
        self.ipv6_prefix = settings.rate_ipv6_prefix
        self._customer_header = settings.customer_id_header
        self.active = prepare(settings.policies, self.ipv6_prefix)
        _show_policy(None, self.active)
        self._warn_uncounted_customers()
        self._app_clock = settings.rate_clock == "app"
        self._timeout = settings.limiter_timeout_ms / 1000
        self.breaker = CircuitBreaker(
            settings.limiter_breaker_failures, settings.limiter_breaker_cooldown_ms / 1000
        )
        self.deny_cache = DenyCache() if settings.limiter_deny_cache else None
        self.shares_main_redis = (
            settings.limiter_redis_url == settings.redis_url and not settings.limiter_redis_cluster
        )
        """True when the buckets live on the main Redis, so admission can check them in its own call."""

    @property
    def policies(self) -> Policies:
        return self.active.policies

    def apply(self, policies: Policies | ActivePolicy) -> ActivePolicy:
        """Enforce ``policies`` (or ones ``prepare`` made ready) from the next request on (one that
        is deciding keeps the plan it made). Buckets are named by route, limit and client, so a
        limit that keeps its name keeps its state; the deny cache is dropped, as its entries were
        timed by the old limits."""
        before = self.active
        if not isinstance(policies, ActivePolicy):
            policies = prepare(policies, self.ipv6_prefix)
        self.active = policies
        if self.deny_cache is not None:
            self.deny_cache.clear()
        _show_policy(before, self.active)
        self._warn_uncounted_customers()
        return self.active

    def _warn_uncounted_customers(self) -> None:
        """Without ``FLASHSALE_CUSTOMER_ID_HEADER`` no request has a customer: a ``customer`` limit
        counts IPs, and ``customer:`` overrides and allow entries never match. Said loudly at load
        (not refused: a running deployment must not fail to start over it)."""
        if self._customer_header:
            return
        for route, policy in self.policies.items():
            named = [f"limit {limit.name}" for limit in policy.limits if limit.key == "customer"]
            named += [
                f"{entry!r}"
                for entry in [*policy.allow, *(o.match for o in policy.overrides)]
                if entry.startswith("customer:")
            ][:3]
            if named:
                log.warning(
                    "rate policy names customers but FLASHSALE_CUSTOMER_ID_HEADER is not set: "
                    "customer limits count client IPs, customer: matches never match",
                    extra={"route": route, "names": ", ".join(named)},
                )

    @property
    def degraded(self) -> bool:
        return self.breaker.state is not BreakerState.CLOSED

    def resolve(self, route: str, client: ClientIdentity) -> Plan | Outcome:
        """The plan of this client's request on ``route`` (its overrides applied), or the outcome
        that needs none: ``UNLIMITED`` (no policy) or ``ALLOW_LISTED``. Counts nothing."""
        index = self.active.indexes.get(route)
        if index is None:
            return Outcome.UNLIMITED
        policy = index.for_client(client)
        if policy is None:
            return Outcome.ALLOW_LISTED
        return Plan(route, policy, bucket_keys(route, policy, client))

    def plan(self, route: str, client: ClientIdentity) -> Plan | None:
        """The plan, or None when the request is not limited (an allow-listed client is counted)."""
        resolved = self.resolve(route, client)
        if resolved is Outcome.ALLOW_LISTED:
            self._count(route, Verdict(resolved))
        return resolved if isinstance(resolved, Plan) else None

    def arguments(self, plan: Plan | None, costs: list[int] | None = None) -> list[int | str]:
        """The clock argument, then capacity, refill and cost per bucket (a shadow limit's cost
        negative: it never denies); ``costs`` replaces the costs (0 only reads a bucket)."""
        args: list[int | str] = ["" if not self._app_clock else time.time_ns() // 1000]
        for i, limit in enumerate(plan.policy.limits if plan else ()):
            cost = limit.cost if costs is None else costs[i]
            args += [limit.capacity, limit.refill_micro_per_sec, -cost if limit.shadow else cost]
        return args

    def cached_denial(self, plan: Plan) -> Verdict | None:
        """A 429 from memory, while one of the buckets is known to be empty."""
        if self.deny_cache is None or not (hit := self.deny_cache.remaining(plan.keys)):
            return None
        key, seconds = hit
        state = LimitState(plan.policy.limits[plan.keys.index(key)], False, 0, math.ceil(seconds * 1000), 0)
        return self._count(plan.route, Verdict(Outcome.LIMITED, plan.policy, (state,), cached=True))

    def conclude(self, plan: Plan, admitted: bool, values: list[int]) -> Verdict:
        """The verdict from a script's per-bucket reply values; remembers empty buckets."""
        states = _states(plan, values)
        outcome = Outcome.ADMITTED if admitted else Outcome.LIMITED
        if admitted and any(state.limit.shadow and not state.allowed for state in states):
            outcome = Outcome.SHADOW_LIMITED
        verdict = Verdict(outcome, plan.policy, states)
        if not admitted and self.deny_cache is not None:
            for key, state in zip(plan.keys, states, strict=True):
                if not state.allowed and not state.limit.shadow:
                    self.deny_cache.deny(key, state.retry_after_ms / 1000)
        return self._count(plan.route, verdict)

    async def check(self, route: str, client: ClientIdentity) -> Verdict:
        """The route's verdict for this client: from memory when it can, else ``decide``."""
        plan = self.resolve(route, client)
        if not isinstance(plan, Plan):
            return self._count(route, Verdict(plan))
        return self.cached_denial(plan) or await self.decide(plan)

    async def decide(self, plan: Plan) -> Verdict:
        """Check and charge on the limiter's Redis alone (token_buckets.lua)."""
        reply = await self._run(self._script, plan)
        if reply is None:
            return self._count(plan.route, self._failed(plan.policy))
        return self.conclude(plan, bool(reply[0]), reply[2:])

    async def refund(self, plan: Plan, verdict: Verdict) -> Verdict:
        """Give back what ``verdict`` charged, for a request refused after the limits admitted it;
        the verdict then describes the buckets as if the request had never come. When the
        limiter's Redis cannot take the tokens back they stay taken (the error is on the side of
        the limit) and ``verdict`` stands."""
        if verdict.outcome not in (Outcome.ADMITTED, Outcome.SHADOW_LIMITED):  # failed open: nothing charged
            return verdict
        # A shadow limit without room was not charged: nothing to give back to it.
        costs = [0 if s.limit.shadow and not s.allowed else s.limit.cost for s in verdict.states]
        reply = await self._run(self._refund_script, plan, costs)
        if reply is None:
            return verdict
        if self.deny_cache is not None:
            # A request that was denied while these tokens were out would be denied from memory
            # until the refill it was told of: forget it, the tokens are back.
            self.deny_cache.forget(plan.keys)
        return Verdict(verdict.outcome, plan.policy, _states(plan, reply[2:]))

    async def inspect(self, plan: Plan) -> tuple[LimitState, ...] | None:
        """Each bucket's state, refilled to now, charging nothing; None when Redis cannot answer."""
        reply = await self._run(self._script, plan, [0] * len(plan.keys))
        return None if reply is None else _states(plan, reply[2:])

    async def reset(self, plan: Plan) -> bool:
        """Refill the plan's buckets (a missing bucket is full); False when Redis cannot answer."""
        reply = await self._run(self._reset, plan)
        if reply is not None and self.deny_cache is not None:
            self.deny_cache.forget(plan.keys)
        return reply is not None

    async def _reset(self, keys: list[str], args: list) -> int:
        # One key at a time: a cluster client sends each to its own node (they share a slot anyway).
        return sum([await self._redis.delete(key) for key in keys])

    async def _run(self, script, plan: Plan, costs: list[int] | None = None) -> list | None:
        """One script call on the plan's buckets behind the breaker and the timeout; None when
        Redis could not answer."""
        if not self.breaker.allow():
            return None
        try:
            async with asyncio.timeout(self._timeout):
                reply = await script(keys=plan.keys, args=self.arguments(plan, costs))
        except (
            RedisError,
            OSError,
            TimeoutError,
            RuntimeError,
        ) as exc:  # RuntimeError: RedisCluster's nodes cannot take our RedisConnection
            self._record(success=False, error=exc)
            return None
        self._record(success=True)
        return reply

    @staticmethod
    def _failed(policy: RoutePolicy) -> Verdict:
        outcome = Outcome.FAILED_OPEN if policy.on_redis_error == "open" else Outcome.FAILED_CLOSED
        return Verdict(outcome, policy)

    def _record(self, success: bool, error: Exception | None = None) -> None:
        before = self.breaker.state
        if success:
            self.breaker.record_success()
        else:
            self.breaker.record_failure()
        after = self.breaker.state
        LIMITER_DEGRADED.set(int(after is not BreakerState.CLOSED))
        if after is not before and after is BreakerState.OPEN:
            log.warning("limiter degraded: circuit open", extra={"error": type(error).__name__})
        elif after is not before and after is BreakerState.CLOSED:
            log.info("limiter recovered: circuit closed")

    @staticmethod
    def _count(route: str, verdict: Verdict) -> Verdict:
        """Every verdict passes here: count it, and tell the request's span."""
        outcome = "limited_cached" if verdict.cached else verdict.outcome.value
        _decisions(route, outcome).inc()
        span = trace.get_current_span()
        if not span.is_recording():  # tracing off: build none of the attributes on the hot path
            return verdict
        record(
            span,
            limiter_outcome=outcome,
            limiter_limits=[state.limit.name for state in verdict.states] or None,
            limiter_violated=verdict.violated or None,
            limiter_shadow_violated=verdict.shadow_violated or None,
            limiter_remaining=min((state.remaining for state in verdict.states), default=None),
        )
        return verdict


def _states(plan: Plan, values: list[int]) -> tuple[LimitState, ...]:
    """Each limit's state from a script's per-bucket reply values (four per bucket)."""
    return tuple(
        LimitState(limit, bool(values[4 * i]), *(int(v) for v in values[4 * i + 1 : 4 * i + 4]))
        for i, limit in enumerate(plan.policy.limits)
    )


@cache
def _decisions(route: str, outcome: str):
    """The counter child of one route and outcome, looked up once (both sets are small)."""
    return LIMITER_DECISIONS.labels(route=route, outcome=outcome)


def ratelimit_headers(verdict: Verdict, legacy: bool = False) -> dict[str, str]:
    """IETF RateLimit-Policy / RateLimit fields (structured-field lists), Retry-After on a 429,
    and optionally the legacy X-RateLimit-* trio for the most constraining limit."""
    limits = [limit for limit in verdict.policy.limits if not limit.shadow] if verdict.policy else []
    if not limits:  # no policy, or only limits in shadow: a client is told of enforced limits only
        return {}
    headers = {
        "RateLimit-Policy": ", ".join(
            f'"{limit.name}";q={limit.capacity};w={limit.window_seconds}' for limit in limits
        )
    }
    if states := verdict.enforced:
        headers["RateLimit"] = ", ".join(
            f'"{s.limit.name}";r={s.remaining};t={math.ceil((s.retry_after_ms or s.reset_ms) / 1000)}'
            for s in states
        )
        if legacy:
            tightest = min(states, key=lambda s: (s.allowed, s.remaining))
            headers["X-RateLimit-Limit"] = str(tightest.limit.capacity)
            headers["X-RateLimit-Remaining"] = str(tightest.remaining)
            headers["X-RateLimit-Reset"] = str(
                math.ceil((tightest.retry_after_ms or tightest.reset_ms) / 1000)
            )
    if verdict.outcome is Outcome.LIMITED:
        headers["Retry-After"] = str(verdict.retry_after_seconds)
    return headers


def _show_policy(before: ActivePolicy | None, after: ActivePolicy) -> None:
    """The gauge: one series, labelled with the active policy's digest, valued its load time."""
    if before is not None and before.digest != after.digest:
        RATE_POLICY_LOADED.remove(before.digest)
    RATE_POLICY_LOADED.labels(after.digest).set(after.loaded_at)
