"""Rate-limit policies: per route, a list of token-bucket limits checked all or nothing.

A policy comes from ``FLASHSALE_RATE_POLICIES`` (JSON) or the file named by
``FLASHSALE_RATE_POLICY_FILE`` (JSON, or TOML when it ends in ``.toml``)::

    {"buy": {"on_redis_error": "closed",
             "limits": [{"name": "per-ip", "key": "ip", "capacity": 5, "refill_per_sec": 1},
                        {"name": "sale", "key": "global", "capacity": 2000, "refill_per_sec": 500}]}}

Without either, ``/buy`` gets one per-IP limit from ``FLASHSALE_RATE_CAPACITY`` and
``FLASHSALE_RATE_REFILL_PER_SEC`` (5, 1/s), and no other route is limited.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Route = Literal["buy", "orders", "products"]
FailMode = Literal["closed", "open"]
KEY_KINDS = ("ip", "customer", "api_key", "global")
HEADER_KIND = re.compile(r"^header:[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
MAX_LIMITS_PER_ROUTE = 8


class PolicyError(ValueError):
    """A policy that cannot be enforced as written."""


class LimitSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
    """Shown to clients in RateLimit headers and 429 problems."""
    key: str
    """What one bucket counts: ``ip``, ``customer``, ``api_key``, ``global`` or ``header:<name>``."""
    capacity: Annotated[int, Meta(ge=1, le=1_000_000_000)]
    refill_per_sec: Annotated[float, Meta(gt=0, le=1_000_000_000)]
    cost: Annotated[int, Meta(ge=1, le=1_000_000_000)] = 1
    """Tokens one request takes."""

    @property
    def refill_micro_per_sec(self) -> int:
        return max(1, round(self.refill_per_sec * 1_000_000))

    @property
    def window_seconds(self) -> int:
        """Seconds an empty bucket takes to fill: the policy window ``w``."""
        return max(1, -(-self.capacity * 1_000_000 // self.refill_micro_per_sec))


class RoutePolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    limits: list[LimitSpec]
    on_redis_error: FailMode = "closed"
    """``closed``: answer 503 when the limiter cannot decide; ``open``: admit, and count it."""


Policies = dict[Route, RoutePolicy]


def _check(policies: Policies) -> Policies:
    for route, policy in policies.items():
        if not 1 <= len(policy.limits) <= MAX_LIMITS_PER_ROUTE:
            raise PolicyError(f"{route}: between 1 and {MAX_LIMITS_PER_ROUTE} limits")
        names = [limit.name for limit in policy.limits]
        if len(set(names)) != len(names):
            raise PolicyError(f"{route}: limit names must be unique")
        for limit in policy.limits:
            if limit.key not in KEY_KINDS and not HEADER_KIND.match(limit.key):
                raise PolicyError(
                    f"{route}.{limit.name}: key must be one of {', '.join(KEY_KINDS)} or header:<name>"
                )
            if limit.cost > limit.capacity:
                raise PolicyError(f"{route}.{limit.name}: cost exceeds capacity, so nothing could pass")
    return policies


def parse_policies(document: str | bytes, toml: bool = False) -> Policies:
    """Decode and validate a policy document; :class:`PolicyError` says what is wrong."""
    try:
        raw = tomllib.loads(document if isinstance(document, str) else document.decode()) if toml else None
        if raw is None:
            raw = json.loads(document)
        return _check(msgspec.convert(raw, Policies))
    except (ValueError, msgspec.ValidationError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(str(exc)) from None


def load_policy_file(path: Path) -> Policies:
    try:
        document = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read {path}: {exc.strerror}") from None
    return parse_policies(document, toml=path.suffix == ".toml")


def default_policies(capacity: int, refill_per_sec: float) -> Policies:
    return _check({"buy": RoutePolicy([LimitSpec("per-ip", "ip", capacity, refill_per_sec)])})
