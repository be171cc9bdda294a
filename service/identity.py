"""Who a request counts against, for each kind of limit key."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from litestar import Request

from service.client_ip import is_trusted_peer, resolve_client_ip
from service.settings import Settings

DIGEST_CHARS = 24
"""Customer ids, API keys and header values are hashed: no secrets or personal data in Redis
keys, and no '{' or '}' that could move a key out of its Redis Cluster slot."""


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    ip: str
    customer: str | None
    headers: Mapping[str, str]
    api_key_header: str


def client_identity(request: Request, settings: Settings) -> ClientIdentity:
    peer = request.client.host if request.client else ""
    trusted = settings.trusted_proxies
    ip = resolve_client_ip(peer, request.headers.getall("x-forwarded-for", []), trusted)
    customer = None
    # Only a trusted proxy (the auth gateway) may say who the customer is.
    if settings.customer_id_header and is_trusted_peer(peer, trusted):
        customer = request.headers.get(settings.customer_id_header) or None
    return ClientIdentity(ip, customer, request.headers, settings.api_key_header)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:DIGEST_CHARS]


def identity_of(kind: str, client: ClientIdentity) -> str:
    """The bucket identity for one limit key kind; a request lacking it counts by its IP."""
    if kind == "ip":
        return f"ip:{client.ip}"
    if kind == "global":
        return "global"
    if kind == "customer":
        value = client.customer
    elif kind == "api_key":
        value = client.headers.get(client.api_key_header)
    else:  # header:<name>
        value = client.headers.get(kind.removeprefix("header:").lower())
    return f"{kind}:{_digest(value)}" if value else f"ip:{client.ip}"
