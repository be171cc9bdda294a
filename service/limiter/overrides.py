"""Per-client exceptions to a route's policy: its allow list and its overrides.

A match names an address or network (``203.0.113.0/24``, against the client's exact address), a
customer (``customer:<id>``) or an API key (``api_key:<key>``, or ``api_key:<prefix>*``). An
override replaces capacity and refill in the limits counting that kind of identity.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

import msgspec

from service.core.policies import RoutePolicy, match_kind
from service.limiter.identity import ClientIdentity

_kind = lru_cache(maxsize=4096)(match_kind)
"""Matches were validated at load: here they are only classified, once each."""


@lru_cache(maxsize=4096)
def _network(match: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(match)


@lru_cache(maxsize=65536)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def matches(match: str, client: ClientIdentity) -> bool:
    kind = _kind(match)
    if kind == "customer":
        return client.customer is not None and client.customer == match.removeprefix("customer:")
    if kind == "api_key":
        key, wanted = client.headers.get(client.api_key_header), match.removeprefix("api_key:")
        if not key:
            return False
        return key.startswith(wanted[:-1]) if wanted.endswith("*") else key == wanted
    address = _address(client.ip)
    network = _network(match)
    return address is not None and address.version == network.version and address in network


def for_client(policy: RoutePolicy, client: ClientIdentity) -> RoutePolicy | None:
    """The policy as it applies to this client: None when the client is allow-listed, else with
    the first matching override applied to each limit it concerns."""
    if any(matches(match, client) for match in policy.allow):
        return None
    limits = list(policy.limits)
    changed = False
    for i, limit in enumerate(limits):
        for override in policy.overrides:
            if _kind(override.match) == limit.key and matches(override.match, client):
                limits[i] = msgspec.structs.replace(
                    limit, capacity=override.capacity, refill_per_sec=override.refill_per_sec
                )
                changed = True
                break
    return msgspec.structs.replace(policy, limits=limits) if changed else policy
