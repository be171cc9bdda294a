"""Rate-limit policies: per route, a list of token-bucket limits checked all or nothing.

A policy comes from ``FLASHSALE_RATE_POLICIES`` (JSON) or the file named by
``FLASHSALE_RATE_POLICY_FILE`` (JSON, or TOML when it ends in ``.toml``)::

    {"buy": {"on_redis_error": "closed",
             "limits": [{"name": "per-ip", "key": "ip", "capacity": 5, "refill_per_sec": 1},
                        {"name": "sale", "key": "global", "capacity": 2000, "refill_per_sec": 500}]}}

Without either, ``/buy`` gets one per-IP limit from ``FLASHSALE_RATE_CAPACITY`` and
``FLASHSALE_RATE_REFILL_PER_SEC`` (5, 1/s), and no other route is limited.

A limit may say ``"mode": "shadow"``: checked and charged, never denying (a dry run). A route
may list ``overrides`` (other capacity and refill for some clients) and an ``allow`` list of
clients it never limits; both match an address or network (``203.0.113.0/24``), a customer
(``customer:<id>``) or an API key (``api_key:<key>``, or ``api_key:<prefix>*``), at most
``MAX_MATCHES_PER_ROUTE`` entries together, each once. An IPv4-mapped network is its IPv4
network; a zone (``fe80::1%eth0``) or an IPv6 network narrower than the one per-IP limits count
a client by (``FLASHSALE_RATE_IPV6_PREFIX``) could never match as written, and is refused.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Route = Literal["buy", "orders", "products"]
FailMode = Literal["closed", "open"]
Mode = Literal["enforce", "shadow"]
KEY_KINDS = ("ip", "customer", "api_key", "global")
HEADER_KIND = re.compile(r"^header:[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
MAX_LIMITS_PER_ROUTE = 8
LIMIT_NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"
MAX_UNITS = 1_000_000_000
"""The most a capacity, a cost or a refill per second may be."""
MAX_MATCHES_PER_ROUTE = 20_000
"""Overrides and allow entries of one route, together: each request looks them up in an index
(service/limiter/overrides.py), so the number costs memory and load time, not request time."""
MAX_POLICY_FILE_BYTES = 1024 * 1024
"""A policy file larger than this is refused unread (a ConfigMap holds 1 MiB at most too)."""
DEFAULT_IPV6_PREFIX = 64
"""``FLASHSALE_RATE_IPV6_PREFIX``'s default: per-IP limits count an IPv6 client by its /64."""
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class PolicyError(ValueError):
    """A policy that cannot be enforced as written."""


class LimitSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(pattern=LIMIT_NAME)]
    """Shown to clients in RateLimit headers and 429 problems."""
    key: str
    """What one bucket counts: ``ip``, ``customer``, ``api_key``, ``global`` or ``header:<name>``."""
    capacity: Annotated[int, Meta(ge=1, le=MAX_UNITS)]
    refill_per_sec: Annotated[float, Meta(gt=0, le=MAX_UNITS)]
    cost: Annotated[int, Meta(ge=1, le=MAX_UNITS)] = 1
    """Tokens one request takes."""
    mode: Mode = "enforce"
    """``shadow``: refilled, checked and charged, but never denies (counted ``shadow_limited``)."""

    @property
    def shadow(self) -> bool:
        return self.mode == "shadow"

    @property
    def refill_micro_per_sec(self) -> int:
        return max(1, round(self.refill_per_sec * 1_000_000))

    @property
    def window_seconds(self) -> int:
        """Seconds an empty bucket takes to fill: the policy window ``w``."""
        return max(1, -(-self.capacity * 1_000_000 // self.refill_micro_per_sec))


class Override(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Another capacity and refill for the clients ``match`` names, in the route's limits that
    count that kind of identity (an address or network: ``ip`` limits; ``customer:``:
    ``customer`` limits; ``api_key:``: ``api_key`` limits)."""

    match: Annotated[str, Meta(min_length=1, max_length=200)]
    capacity: Annotated[int, Meta(ge=1, le=MAX_UNITS)]
    refill_per_sec: Annotated[float, Meta(gt=0, le=MAX_UNITS)]


class RoutePolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    limits: list[LimitSpec]
    on_redis_error: FailMode = "closed"
    """``closed``: answer 503 when the limiter cannot decide; ``open``: admit, and count it."""
    overrides: list[Override] = []
    """The most specific override matching a client applies to it (service/limiter/overrides.py)."""
    allow: list[Annotated[str, Meta(min_length=1, max_length=200)]] = []
    """Clients this route never limits."""


Policies = dict[Route, RoutePolicy]


def parse_match(match: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> tuple[str, str | IPNetwork]:
    """The limit key kind a match counts (``ip``, ``customer``, ``api_key``) and what it names (the
    id, the key or ``prefix*``, the network); raises :class:`PolicyError` for a match that names
    none, or that no request could ever match."""
    kind, sep, value = match.partition(":")
    if sep and kind in ("customer", "api_key"):
        if not value or (kind == "customer" and value.endswith("*")) or "*" in value[:-1]:
            raise PolicyError(f"{match!r}: customer:<id> or api_key:<key> (or api_key:<prefix>*)")
        return kind, value
    if "%" in match:
        raise PolicyError(f"{match!r}: a zone (%...) names an interface of a proxy, never a client")
    try:
        network = ipaddress.ip_network(match, strict=True)
    except ValueError:
        raise PolicyError(
            f"{match!r}: an address, a network such as 203.0.113.0/24, customer:<id> or api_key:<key>"
        ) from None
    if network.version == 6 and network.subnet_of(_IPV4_MAPPED):
        # Clients are counted by their IPv4 address (service/limiter/client_ip.py): so is the match.
        address = network.network_address.ipv4_mapped
        return "ip", ipaddress.IPv4Network((address, network.prefixlen - 96))
    if network.version == 6 and network.prefixlen > ipv6_prefix:
        raise PolicyError(
            f"{match!r}: IPv6 clients are counted by their /{ipv6_prefix} network "
            f"(FLASHSALE_RATE_IPV6_PREFIX): match that network, or a wider one"
        )
    return "ip", network


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _check(policies: Policies, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> Policies:
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
        if len(policy.allow) + len(policy.overrides) > MAX_MATCHES_PER_ROUTE:
            raise PolicyError(f"{route}: at most {MAX_MATCHES_PER_ROUTE} overrides and allow entries")
        for what, matches in (("allow", policy.allow), ("overrides", [o.match for o in policy.overrides])):
            seen: set[tuple[str, str | IPNetwork]] = set()
            for match in matches:
                named = parse_match(match, ipv6_prefix)
                if named in seen:
                    raise PolicyError(f"{route}: {what} names {match!r} twice")
                seen.add(named)
        for override in policy.overrides:
            kind, _ = parse_match(override.match, ipv6_prefix)
            counted = [limit for limit in policy.limits if limit.key == kind]
            if not counted:
                raise PolicyError(f"{route}: override {override.match!r} matches no limit counting {kind}")
            if any(limit.cost > override.capacity for limit in counted):
                raise PolicyError(f"{route}: override {override.match!r}: a cost exceeds its capacity")
    return policies


def parse_policies(
    document: str | bytes, toml: bool = False, ipv6_prefix: int = DEFAULT_IPV6_PREFIX
) -> Policies:
    """Decode and validate a policy document; :class:`PolicyError` says what is wrong.
    ``ipv6_prefix`` is ``FLASHSALE_RATE_IPV6_PREFIX`` (IPv6 matches narrower than it are refused)."""
    try:
        if isinstance(document, bytes):
            document = document.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"not UTF-8: {exc}") from None
    try:
        raw = tomllib.loads(document) if toml else json.loads(document)
        return _check(msgspec.convert(raw, Policies), ipv6_prefix)
    except (ValueError, msgspec.ValidationError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(str(exc)) from None


def read_policy_file(path: Path) -> bytes:
    """The file's bytes; :class:`PolicyError` when it cannot be read or is larger than
    ``MAX_POLICY_FILE_BYTES`` (known from ``stat`` alone: such a file is never read)."""
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > MAX_POLICY_FILE_BYTES:
                raise PolicyError(f"{path} is {size} bytes, above the {MAX_POLICY_FILE_BYTES} allowed")
            document = file.read(MAX_POLICY_FILE_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"cannot read {path}: {exc.strerror}") from None
    if len(document) > MAX_POLICY_FILE_BYTES:  # it grew while we read it
        raise PolicyError(f"{path} is above the {MAX_POLICY_FILE_BYTES} bytes allowed")
    return document


def load_policy_file(path: Path, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> Policies:
    return parse_policies(read_policy_file(path), path.suffix == ".toml", ipv6_prefix)


def default_policies(capacity: int, refill_per_sec: float) -> Policies:
    return _check({"buy": RoutePolicy([LimitSpec("per-ip", "ip", capacity, refill_per_sec)])})


def in_shadow(policies: Policies) -> Policies:
    """Every limit in shadow (``FLASHSALE_RATE_SHADOW``)."""
    return {
        route: msgspec.structs.replace(
            policy, limits=[msgspec.structs.replace(limit, mode="shadow") for limit in policy.limits]
        )
        for route, policy in policies.items()
    }


def policy_digest(policies: Policies) -> str:
    """What an operator compares across pods: the same policy has the same digest, whatever
    the file's spacing or order of routes."""
    document = msgspec.json.encode(msgspec.to_builtins(policies), order="sorted")
    return hashlib.sha256(document).hexdigest()[:16]
