"""Who a request counts against, for each kind of limit key (``service.api.client_identity`` reads it
from a request)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

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
