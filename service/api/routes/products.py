"""``GET /products/{id}``: the product, its stock and its sale state."""

from __future__ import annotations

from datetime import UTC, datetime

from anyio import to_thread
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from db.models import Product
from db.orders import find_product
from service.api.problems import problem, problem_responses
from service.api.routes.rate_limited import enforce_rate_limit
from service.api.schemas import MAX_ID, ProductView
from service.core.keys import gate_key
from service.sale.resources import Resources


@get(
    "/products/{product_id:int}",
    summary="A product and its sale state",
    operation_id="getProduct",
    responses=problem_responses(400, 404, 429, 503),
)
async def get_product(
    product_id: FromPath[int], request: Request, resources: NamedDependency[Resources]
) -> Response[ProductView]:
    _, headers = await enforce_rate_limit("products", request, resources)
    # An id no product can have (the path takes any integer, 2**70 too) is not worth a query.
    product = (
        await to_thread.run_sync(find_product, resources.engine, product_id)
        if 1 <= product_id <= MAX_ID
        else None
    )
    if product is None:
        raise problem(404, "unknown-product", f"There is no product {product_id}.")
    gate = await resources.redis.get(gate_key(product_id))
    return Response(product_view(product, product.stock if gate is None else int(gate)), headers=headers)


def sale_state(product: Product, available: int, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    if product.sale_opens_at and now < product.sale_opens_at:
        return "upcoming"
    if product.sale_closes_at and now >= product.sale_closes_at:
        return "closed"
    return "sold_out" if available == 0 else "open"


def product_view(product: Product, gate: int) -> ProductView:
    available = max(0, gate)
    return ProductView(
        id=product.id,
        name=product.name,
        price=f"{product.price:.2f}",
        stock=product.stock,
        available=available,
        sold_out=available == 0,
        sale=sale_state(product, available),
        sale_opens_at=product.sale_opens_at,
        sale_closes_at=product.sale_closes_at,
        per_customer_limit=product.per_customer_limit,
    )
