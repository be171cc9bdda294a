"""Who is asking: the client address, believing X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from service.settings import IPNetwork

KNOWN_ADDRESSES = 65_536
"""Addresses whose parse is remembered: the peers (a few ingress pods) and the busiest clients."""


@lru_cache(maxsize=KNOWN_ADDRESSES)
def _address(text: str, trusted: tuple[IPNetwork, ...]) -> tuple[str, bool] | None:
    """``text`` as a normalized address and whether it is one of ``trusted``; None when it is
    no address. Cached: parsing is most of what resolving a client costs on the hot path."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return str(address), any(address in network for network in trusted)


def is_trusted_peer(peer: str, trusted: Sequence[IPNetwork]) -> bool:
    address = _address(peer, tuple(trusted))
    return address is not None and address[1]


def resolve_client_ip(peer: str, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]) -> str:
    """The right-most address in the proxy chain that is not one of our trusted proxies.

    ``forwarded_for`` holds every ``X-Forwarded-For`` header value in order. Walking from
    the right, each hop was appended by the proxy before it; we stop at the first hop we
    do not trust, since anything left of it may be forged by the client. A peer we do not
    trust gets no say at all, and a malformed hop ends the walk at the last trusted one.
    """
    trusted = tuple(trusted)
    peer_address = _address(peer, trusted)
    if peer_address is None:
        return peer
    client, believed = peer_address
    if not believed:
        return client
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        address = _address(hop, trusted)
        if address is None:
            break
        client, believed = address
        if not believed:
            break
    return client
