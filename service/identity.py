"""Who a request counts against, for each kind of limit key."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from litestar import Request

from service.client_ip import counted_network, is_trusted_peer, resolve_client_ip
from service.settings import Settings

DIGEST_CHARS = 24
"""Customer ids, API keys and header values are hashed: no secrets or personal data in Redis
keys, and no '{' or '}' that could move a key out of its Redis Cluster slot."""


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    ip: str
    """The client's address, exact: what an order records, and what scopes its Idempotency-Key."""
    customer: str | None
    headers: Mapping[str, str]
    api_key_header: str
    network: str | None = None
    """The IPv6 network per-IP limits count the client by; None: its address alone."""


def client_identity(request: Request, settings: Settings) -> ClientIdentity:
    peer = request.client.host if request.client else ""
    trusted = settings.trusted_proxies
    header = settings.client_ip_header
    ip = resolve_client_ip(peer, request.headers.getall(header, []), trusted, header == "forwarded")
    customer = None
    # Only a trusted proxy (the auth gateway) may say who the customer is.
    if settings.customer_id_header and is_trusted_peer(peer, trusted):
        customer = request.headers.get(settings.customer_id_header) or None
    network = counted_network(ip, settings.rate_ipv6_prefix)
    return ClientIdentity(ip, customer, request.headers, settings.api_key_header, network)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:DIGEST_CHARS]


def identity_of(kind: str, client: ClientIdentity) -> str:
    """The bucket identity for one limit key kind; a request lacking it counts by its IP (or
    its IPv6 network)."""
    counted_ip = f"ip:{client.network or client.ip}"
    if kind == "ip":
        return counted_ip
    if kind == "global":
        return "global"
    if kind == "customer":
        value = client.customer
    elif kind == "api_key":
        value = client.headers.get(client.api_key_header)
    else:  # header:<name>
        value = client.headers.get(kind.removeprefix("header:").lower())
    return f"{kind}:{_digest(value)}" if value else counted_ip
