"""Who is asking: the client's address, believing the header a trusted proxy writes
(``X-Forwarded-For``, or RFC 7239 ``Forwarded``) only from trusted proxies; and the network
per-IP limits count it by."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from functools import lru_cache

from service.core.settings import IPNetwork

KNOWN_ADDRESSES = 65_536
"""Addresses whose parse is remembered: the peers (a few ingress pods) and the busiest clients."""
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_PORT = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+")
"""RFC 7239's node-port: a port, or an obfuscated one (the address beside it is still known)."""
_FORWARDED_PAIR = re.compile(r'[ \t]*([^=;,\s]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^;,\s"]*)[ \t]*([;,]|$)')
"""One ``name=value`` of a Forwarded element, a token or a quoted string, and what ends it: ``;``
(the element goes on), ``,`` or the end (it is over). Unquoted values may hold ``:`` and ``[]``,
which RFC 7239 wants quoted: some proxies write ``for=192.0.2.7:4711`` all the same."""


def _node(text: str) -> IPAddress | None:
    """The address of one hop: ``203.0.113.7``, ``203.0.113.7:5555``, ``2001:db8::1``,
    ``[2001:db8::1]`` or ``[2001:db8::1]:443``; an IPv4-mapped IPv6 address is its IPv4 address.
    None for anything else: ``unknown``, an obfuscated ``_name``, a zone (``fe80::1%eth0``, an
    interface of the proxy, and a way to mint as many buckets as names), garbage."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and _PORT.fullmatch(port[1:]))):
            return None
    elif text.count(":") == 1:  # IPv4 with a port: bare IPv6 has two colons or more
        host, _, port = text.partition(":")
        if not _PORT.fullmatch(port):
            return None
    else:
        host = text
    return client_address(host)


def client_address(text: str) -> IPAddress | None:
    """``text`` as the address a client is counted by, when it is exactly one: an IPv4-mapped
    IPv6 address is its IPv4 address; a zone (``fe80::1%eth0``) is none."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6:
        if address.scope_id:
            return None
        # ::ffff:a.b.c.d is an IPv4 client behind a dual-stack socket or proxy: it is counted
        # alone, as a.b.c.d, never grouped into an IPv6 network with every other IPv4 client.
        return address.ipv4_mapped or address
    return address


@lru_cache(maxsize=KNOWN_ADDRESSES)
def _address(text: str, trusted: tuple[IPNetwork, ...]) -> tuple[str, bool] | None:
    """``text`` as a normalized address and whether it is one of ``trusted``; None when it is
    no address. Cached: parsing is most of what resolving a client costs on the hot path."""
    address = _node(text)
    if address is None:
        return None
    return str(address), any(address in network for network in trusted)


def forwarded_for(value: str) -> list[str | None]:
    """The ``for=`` node of each element of one ``Forwarded`` header line, in order; None for an
    element without one. A line that does not parse, or names a parameter twice in one element,
    is one None: nothing in it is believed."""
    nodes: list[str | None] = []
    element: dict[str, str] = {}
    at = 0
    while at < len(value):
        match = _FORWARDED_PAIR.match(value, at)
        if match is None:
            return [None]
        name, raw, end = match.groups()
        name = name.lower()
        if name in element:
            return [None]
        element[name] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        at = match.end()
        if end != ";":
            nodes.append(element.get("for"))
            element = {}
    return nodes


def _hops(values: Sequence[str], forwarded: bool) -> list[str | None]:
    """Every hop the header's lines name, in order (several lines are one list)."""
    if forwarded:
        return [node for value in values for node in forwarded_for(value)]
    return [hop for value in values for hop in value.split(",")]


def is_trusted_peer(peer: str, trusted: Sequence[IPNetwork]) -> bool:
    address = _address(peer, tuple(trusted))
    return address is not None and address[1]


def resolve_client_ip(
    peer: str, values: Sequence[str], trusted: Sequence[IPNetwork], forwarded: bool = False
) -> str:
    """The right-most address in the proxy chain that is not one of our trusted proxies.

    ``values`` holds every line of the header the proxies write (``X-Forwarded-For``, or
    ``Forwarded`` when ``forwarded``) in order. Walking from the right, each hop was appended by
    the proxy before it; we stop at the first hop we do not trust, since anything left of it may
    be forged by the client. A peer we do not trust gets no say at all, and a hop that names no
    address (garbage, ``unknown``, an obfuscated identifier) ends the walk at the last trusted
    one: such clients count as that proxy, never as whatever a client wrote.
    """
    trusted = tuple(trusted)
    peer_address = _address(peer, trusted)
    if peer_address is None:
        return peer
    client, believed = peer_address
    if not believed:
        return client
    for hop in reversed(_hops(values, forwarded)):
        address = None if hop is None else _address(hop, trusted)
        if address is None:
            break
        client, believed = address
        if not believed:
            break
    return client


@lru_cache(maxsize=KNOWN_ADDRESSES)
def counted_network(address: str, prefix: int) -> str | None:
    """The IPv6 network of ``prefix`` bits that per-IP limits count ``address`` by (one home line
    holds a /64 or a /56: billions of addresses); None when the address counts alone: IPv4
    (IPv4-mapped addresses were made IPv4 already), a /128, or no address at all."""
    if ":" not in address or prefix == 128:
        return None
    try:
        return str(ipaddress.IPv6Network((address, prefix), strict=False))
    except ValueError:
        return None
