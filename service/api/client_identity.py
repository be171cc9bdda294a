"""The client a Litestar request comes from, as the limiter and the sale count it.

Header values reach us as ASGI bytes, which the framework decodes as latin-1; policies and the
admin routes' paths are UTF-8. So the values the limiter reads (the customer id, the API key,
``header:<name>`` values) are decoded as UTF-8 here, and ``customer:jürgen`` in a policy or an
admin path names the bucket a request with ``X-Customer-Id: jürgen`` is counted in. A value that is
not valid UTF-8 keeps its bytes (as surrogate escapes, which the bucket digest encodes back): it is
counted in a bucket of its own, consistently, though no policy or admin path can name it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from litestar import Request

from service.core.settings import Settings
from service.limiter.client_ip import counted_network, is_trusted_peer, resolve_client_ip
from service.limiter.identity import ClientIdentity


def utf8(value: str) -> str:
    """A header value the framework decoded as latin-1, decoded as UTF-8 (bytes kept if invalid)."""
    if value.isascii():
        return value
    return value.encode("latin-1").decode("utf-8", "surrogateescape")


class Utf8Headers(Mapping[str, str]):
    """A request's headers, their values read as UTF-8 (only when asked for: most never are)."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = headers

    def __getitem__(self, name: str) -> str:
        return utf8(self._headers[name])

    def get(self, name: str, default=None):
        value = self._headers.get(name)
        return default if value is None else utf8(value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)


def client_identity(request: Request, settings: Settings) -> ClientIdentity:
    peer = request.client.host if request.client else ""
    trusted = settings.trusted_proxies
    header = settings.client_ip_header
    ip = resolve_client_ip(peer, request.headers.getall(header, []), trusted, header == "forwarded")
    customer = None
    headers = Utf8Headers(request.headers)
    # Only a trusted proxy (the auth gateway) may say who the customer is.
    if settings.customer_id_header and is_trusted_peer(peer, trusted):
        customer = headers.get(settings.customer_id_header) or None
    network = counted_network(ip, settings.rate_ipv6_prefix)
    return ClientIdentity(ip, customer, headers, settings.api_key_header, network)
