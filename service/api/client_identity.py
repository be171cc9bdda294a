"""The client a Litestar request comes from, as the limiter and the sale count it."""

from __future__ import annotations

from litestar import Request

from service.core.settings import Settings
from service.limiter.client_ip import counted_network, is_trusted_peer, resolve_client_ip
from service.limiter.identity import ClientIdentity


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
