"""Per-client exceptions to a route's policy: its allow list and its overrides, indexed.

A match names an address or network (``203.0.113.0/24``), a customer (``customer:<id>``) or an
API key (``api_key:<key>``, or ``api_key:<prefix>*``). An override replaces capacity and refill
in the limits counting that kind of identity. When several overrides of one kind match a client,
the most specific wins: an exact API key over a prefix, a longer prefix over a shorter one, a
narrower network over a wider one (a policy names each match once, so there is no tie).

The lists are indexed when a policy is loaded (``RouteIndex``), so a request costs the same with
ten entries or ``MAX_MATCHES_PER_ROUTE``: one dict probe per customer, one per API key plus one
per distinct prefix length, and one per distinct network length of the client's IP version (at
most 33 for IPv4, 129 for IPv6).
"""

from __future__ import annotations

import ipaddress
from typing import Generic, TypeVar

import msgspec

from service.core.policies import DEFAULT_IPV6_PREFIX, Override, RoutePolicy, parse_match
from service.limiter.identity import ClientIdentity

T = TypeVar("T")


class Matches(Generic[T]):
    """One list's matches (the allow list's, or the overrides'), each leading to a value."""

    def __init__(self, entries: list[tuple[str, T]], ipv6_prefix: int) -> None:
        self.customers: dict[str, T] = {}
        self.keys: dict[str, T] = {}
        prefixes: dict[int, dict[str, T]] = {}
        networks: dict[int, dict[int, dict[int, T]]] = {4: {}, 6: {}}
        for match, value in entries:
            kind, named = parse_match(match, ipv6_prefix)
            if kind == "customer":
                self.customers.setdefault(named, value)
            elif kind == "api_key" and named.endswith("*"):
                prefixes.setdefault(len(named) - 1, {}).setdefault(named[:-1], value)
            elif kind == "api_key":
                self.keys.setdefault(named, value)
            else:
                bits = named.max_prefixlen
                table = networks[named.version].setdefault(named.prefixlen, {})
                table.setdefault(int(named.network_address) >> (bits - named.prefixlen), value)
        self.prefixes = sorted(prefixes.items(), reverse=True)
        """(length, {prefix: value}), the longest first."""
        self.networks = {
            version: [(bits - length, table) for length, table in sorted(by_length.items(), reverse=True)]
            for version, bits in ((4, 32), (6, 128))
            if (by_length := networks[version])
        }
        """Per IP version: (bits dropped, {network as an int shifted right by them: value}), the
        narrowest network first."""

    def customer(self, client: ClientIdentity) -> T | None:
        return self.customers.get(client.customer) if self.customers and client.customer else None

    def api_key(self, client: ClientIdentity) -> T | None:
        if not (self.keys or self.prefixes) or not (key := client.headers.get(client.api_key_header)):
            return None
        if (found := self.keys.get(key)) is not None:
            return found
        for length, table in self.prefixes:
            if len(key) >= length and (found := table.get(key[:length])) is not None:
                return found
        return None

    def ip(self, client: ClientIdentity) -> T | None:
        if not self.networks:
            return None
        try:
            address = ipaddress.ip_address(client.ip)
        except ValueError:
            return None
        # An IPv4-mapped address is its IPv4 (as client_ip.py counts it); and no IPv6 network
        # here is narrower than the one the client is counted by (refused at load), so matching
        # the address is matching the network its buckets count.
        if address.version == 6 and address.ipv4_mapped:
            address = address.ipv4_mapped
        number = int(address)
        for shift, table in self.networks.get(address.version, ()):
            if (found := table.get(number >> shift)) is not None:
                return found
        return None

    def any(self, client: ClientIdentity) -> bool:
        return any(found(client) is not None for found in (self.customer, self.api_key, self.ip))


class RouteIndex:
    """A route's policy with its allow list and overrides indexed, built once per policy load."""

    def __init__(self, policy: RoutePolicy, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> None:
        self.policy = policy
        self.allow = Matches([(match, True) for match in policy.allow], ipv6_prefix)
        self.overrides: Matches[Override] = Matches([(o.match, o) for o in policy.overrides], ipv6_prefix)
        self._empty = not (policy.allow or policy.overrides)

    def for_client(self, client: ClientIdentity) -> RoutePolicy | None:
        """The policy as it applies to this client: None when the client is allow-listed, else
        with the most specific matching override of each kind applied to the limits counting it."""
        if self._empty:
            return self.policy
        if self.allow.any(client):
            return None
        if not self.policy.overrides:
            return self.policy
        found = {
            "customer": self.overrides.customer(client),
            "api_key": self.overrides.api_key(client),
            "ip": self.overrides.ip(client),
        }
        if not any(found.values()):
            return self.policy
        limits = [
            msgspec.structs.replace(limit, capacity=override.capacity, refill_per_sec=override.refill_per_sec)
            if (override := found.get(limit.key)) is not None
            else limit
            for limit in self.policy.limits
        ]
        return msgspec.structs.replace(self.policy, limits=limits)


def for_client(
    policy: RoutePolicy, client: ClientIdentity, ipv6_prefix: int = DEFAULT_IPV6_PREFIX
) -> RoutePolicy | None:
    """``RouteIndex(policy).for_client(client)``: for one question; the limiter keeps its indexes."""
    return RouteIndex(policy, ipv6_prefix).for_client(client)
