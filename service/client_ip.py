"""Who is asking: the client address, believing X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from service.settings import IPNetwork


def _parse(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address.strip())
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted)


def is_trusted_peer(peer: str, trusted: Sequence[IPNetwork]) -> bool:
    address = _parse(peer)
    return address is not None and _trusted(address, trusted)


def resolve_client_ip(peer: str, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]) -> str:
    """The right-most address in the proxy chain that is not one of our trusted proxies.

    ``forwarded_for`` holds every ``X-Forwarded-For`` header value in order. Walking from
    the right, each hop was appended by the proxy before it; we stop at the first hop we
    do not trust, since anything left of it may be forged by the client. A peer we do not
    trust gets no say at all, and a malformed hop ends the walk at the last trusted one.
    """
    peer_address = _parse(peer)
    if peer_address is None:
        return peer
    client = peer_address
    if not _trusted(client, trusted):
        return str(client)
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            break
        client = address
        if not _trusted(address, trusted):
            break
    return str(client)
