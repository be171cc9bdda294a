"""The admin API: products, restocks and sale rules, and one client's rate-limit buckets
(inspect, reset), behind ``FLASHSALE_ADMIN_TOKEN``."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Annotated

import msgspec
from anyio import to_thread
from litestar import Controller, HttpMethod, Request, post, put, route
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers import BaseRouteHandler
from litestar.params import FromPath, JSONBody
from msgspec import Meta
from sqlalchemy import update
from sqlalchemy.exc import DataError
from sqlmodel import Session

from db.models import Product
from service.api.problems import problem, problem_responses
from service.api.request_body import json_bodies_only
from service.api.routes.products import product_view
from service.api.schemas import MAX_ID, BucketState, ClientLimitsView, ProductView
from service.core.keys import gate_key
from service.core.policies import Route as LimitedRoute
from service.limiter.operations import (
    MAX_CLIENT_CHARS,
    InvalidClient,
    LimiterUnreachable,
    announce_reset,
    client_of,
    inspect_client,
    reset_client,
)
from service.sale.reconcile import reconcile_product
from service.sale.resources import Resources
from service.sale.stock_gate import publish_product

Units = Annotated[int, Meta(ge=1, le=1_000_000_000)]
MAX_PRICE = Decimal("99999999.99")


class SaleRules(msgspec.Struct, forbid_unknown_fields=True):
    sale_opens_at: datetime | None = None
    """Before this moment /buy answers sale-not-open (ISO 8601 with a zone; none: open now)."""
    sale_closes_at: datetime | None = None
    per_customer_limit: Units | None = None
    """Most units one customer may be admitted for (none: no limit)."""


class ProductCreate(SaleRules, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200)] = ""
    price: Annotated[str, Meta(pattern=r"^[0-9]+(\.[0-9]+)?$")] = "0"
    """A decimal string up to 99,999,999.99, at most two decimals (a numeric(10, 2) column).
    Plain digits only: a Decimal would also take 5, "1e3" and "NaN" (which compared as a 500)."""
    stock: Annotated[int, Meta(ge=0, le=1_000_000_000)] = 0


class Restock(msgspec.Struct, forbid_unknown_fields=True):
    units: Units


def admin_only(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Bearer token, compared in constant time. Unset, the admin API is closed (403); a
    missing, malformed or wrong token is 401 (RFC 6750)."""
    expected = connection.app.state.resources.settings.admin_token
    if not expected:
        raise problem(403, "admin-disabled", "The admin API is off: FLASHSALE_ADMIN_TOKEN is not set.")
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise problem(
            401,
            "unauthorized",
            "Send the admin token as 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": 'Bearer realm="flashsale-admin"'},
        )
    # Digests are equal in length, so the comparison's time says nothing of the token's length either.
    if not hmac.compare_digest(_digest(token), _digest(expected)):
        raise problem(
            401,
            "invalid-token",
            "That admin token is not valid.",
            headers={"WWW-Authenticate": 'Bearer realm="flashsale-admin", error="invalid_token"'},
        )


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _check_window(rules: SaleRules) -> None:
    """Refuses a window that cannot be, and keeps its times in UTC: PostgreSQL refuses offsets
    beyond ±15:59, which ISO 8601 allows (+23:00 was a 500)."""
    for field in ("sale_opens_at", "sale_closes_at"):
        if (moment := getattr(rules, field)) is None:
            continue
        if moment.tzinfo is None:
            raise problem(422, "invalid-sale", "Sale times need a time zone, e.g. 2026-12-01T09:00:00Z.")
        try:
            setattr(rules, field, moment.astimezone(UTC))
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is in year 0 in UTC
            raise problem(422, "invalid-sale", "Sale times must fall within the years 1 to 9999.") from None
    if rules.sale_opens_at and rules.sale_closes_at and rules.sale_closes_at <= rules.sale_opens_at:
        raise problem(422, "invalid-sale", "The sale must close after it opens.")


def _create(resources: Resources, data: ProductCreate, price: Decimal) -> Product:
    with Session(resources.engine, expire_on_commit=False) as session:
        product = Product(**{**msgspec.structs.asdict(data), "price": price})
        session.add(product)
        session.commit()
        return product


def _change(resources: Resources, product_id: int, values: dict) -> Product | None:
    with Session(resources.engine, expire_on_commit=False) as session:
        changed = session.execute(
            update(Product).where(Product.id == product_id).values(**values, version=Product.version + 1)
        ).rowcount
        session.commit()
        return session.get(Product, product_id) if changed else None


class AdminController(Controller):
    path = "/admin"
    guards = [admin_only]
    tags = ["admin"]

    @post(
        "/products",
        status_code=201,
        summary="Create a product",
        operation_id="createProduct",
        guards=[json_bodies_only],
        responses=problem_responses(400, 401, 403, 408, 413, 415, 422, 503),
    )
    async def create_product(
        self, data: JSONBody[ProductCreate], resources: NamedDependency[Resources]
    ) -> ProductView:
        if not data.name:
            raise problem(422, "invalid-product", "A product needs a name.")
        price = Decimal(data.price)
        if price > MAX_PRICE or price.as_tuple().exponent < -2:
            raise problem(422, "invalid-product", "The price must be 0 to 99999999.99, in cents at most.")
        _check_window(data)
        product = await to_thread.run_sync(_create, resources, data, price)
        await publish_product(resources.redis, product, product.stock)
        return product_view(product, product.stock)

    @post(
        "/products/{product_id:int}/restock",
        status_code=200,
        summary="Add stock",
        operation_id="restock",
        guards=[json_bodies_only],
        responses=problem_responses(400, 401, 403, 404, 408, 413, 415, 422, 503),
    )
    async def restock(
        self,
        product_id: FromPath[Annotated[int, Meta(ge=1, le=MAX_ID)]],
        data: JSONBody[Restock],
        resources: NamedDependency[Resources],
    ) -> ProductView:
        try:
            product = await to_thread.run_sync(
                _change, resources, product_id, {"stock": Product.stock + data.units}
            )
        except DataError as exc:  # past the integer column (it was a 500)
            raise problem(422, "invalid-restock", f"Stock cannot exceed {MAX_ID} units.") from exc
        return await self._republish(resources, product_id, product)

    @put(
        "/products/{product_id:int}/sale",
        summary="Set the sale window and limit",
        operation_id="setSale",
        guards=[json_bodies_only],
        responses=problem_responses(400, 401, 403, 404, 408, 413, 415, 422, 503),
    )
    async def set_sale(
        self,
        product_id: FromPath[Annotated[int, Meta(ge=1, le=MAX_ID)]],
        data: JSONBody[SaleRules],
        resources: NamedDependency[Resources],
    ) -> ProductView:
        _check_window(data)
        product = await to_thread.run_sync(_change, resources, product_id, msgspec.structs.asdict(data))
        return await self._republish(resources, product_id, product)

    # One handler for both methods: with two, Litestar's OPTIONS answer lists only the first.
    # {client:path}: a client may hold '/' (a base64 API key), which arrives decoded (%2F is '/').
    @route(
        "/limits/{route:str}/{client:path}",
        http_method=[HttpMethod.GET, HttpMethod.DELETE],
        status_code=200,
        summary="Inspect (GET) or refill (DELETE) one client's rate-limit buckets",
        description="GET: each limit's tokens, capacity and time to full for this client on this "
        "route (an IP address, customer:<id> or api_key:<key>, at most 300 characters, "
        "percent-encoded as UTF-8; a '/' in it may be sent as is or as %2F), read without charging anything. "
        "DELETE: refills the client's own buckets (never a global limit's, which every client "
        "shares), then answers as GET does.",
        operation_id=lambda _handler, method, _path: "resetLimits" if method == "DELETE" else "inspectLimits",
        responses=problem_responses(400, 401, 403, 404, 408, 422, 503),
    )
    async def client_limits(
        self,
        request: Request,
        route: FromPath[LimitedRoute],
        client: FromPath[str],
        resources: NamedDependency[Resources],
    ) -> ClientLimitsView:
        client = client.removeprefix("/")  # a path parameter keeps its leading '/'
        return await _limits(resources, route, client, reset=request.method == HttpMethod.DELETE)

    @route(
        "/limits/{route:str}",
        http_method=[HttpMethod.GET, HttpMethod.DELETE],
        include_in_schema=False,
    )
    async def no_client(self, route: FromPath[str]) -> None:
        """A path that names no client (``/admin/limits/buy/``, or a client of slashes alone):
        the route's own problem rather than the router's untyped 404."""
        raise _invalid_client()

    @staticmethod
    async def _republish(resources: Resources, product_id: int, product: Product | None) -> ProductView:
        if product is None:
            raise problem(404, "unknown-product", f"There is no product {product_id}.")
        await publish_product(resources.redis, product, None)
        # This process's latches at once: the announcement reaches it a moment after the answer.
        resources.sold_out.clear(product_id)
        resources.not_open.clear(product_id)
        # The gate is rebuilt from the database: stock minus orders not yet decided.
        await to_thread.run_sync(reconcile_product, resources.queue.connection, resources.engine, product_id)
        gate = await resources.redis.get(gate_key(product_id))
        return product_view(product, int(gate) if gate is not None else product.stock)


def _invalid_client():
    return problem(
        422,
        "invalid-client",
        f"A client is an IP address (no zone), customer:<id> or api_key:<key> as a header "
        f"carries it, at most {MAX_CLIENT_CHARS} characters.",
    )


async def _limits(resources: Resources, route: str, client: str, reset: bool) -> ClientLimitsView:
    settings = resources.settings
    try:
        identity = client_of(client, settings.api_key_header, settings.rate_ipv6_prefix)
    except InvalidClient:
        raise _invalid_client() from None
    try:
        if reset:
            announce = partial(announce_reset, resources.redis)
            found = await reset_client(resources.limiter, route, identity, announce)
        else:
            found = await inspect_client(resources.limiter, route, identity)
    except LookupError:
        raise problem(404, "unknown-route", f"No rate-limit policy covers the route {route!r}.") from None
    except LimiterUnreachable:
        raise problem(
            503, "limiter-unavailable", "The rate limiter's Redis cannot answer right now; try again shortly."
        ) from None
    buckets = [
        BucketState(
            name=b.limit.name,
            key=b.limit.key,
            mode=b.limit.mode,
            capacity=b.limit.capacity,
            refill_per_sec=b.limit.refill_per_sec,
            tokens=b.tokens,
            seconds_to_full=b.full_in_ms / 1000,
        )
        for b in found.buckets
    ]
    return ClientLimitsView(route=route, client=client, allow_listed=found.allow_listed, limits=buckets)
