"""``POST /buy``: rate-limit, reserve from the stock gate, queue the order, answer 202."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from anyio import to_thread
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from redis.exceptions import RedisError

from db.orders import AdmittedOrder, find_product
from service.errors import UNAVAILABLE_RETRY_AFTER_SECONDS, problem
from service.resources import Resources
from service.routes.rate_limited import enforce_rate_limit
from service.schemas import BuyAccepted, BuyRequest
from service.stock_gate import Reservation, release, reserve, set_gate
from worker.queue import enqueue_order


async def reserve_units(resources: Resources, product_id: int, quantity: int) -> Reservation:
    """Reserve from the gate, rebuilding a missing gate from PostgreSQL once."""
    reservation = await reserve(resources.scripts, product_id, quantity)
    if not reservation.gate_missing:
        return reservation
    product = await to_thread.run_sync(find_product, resources.engine, product_id)
    if product is None:
        raise problem(422, "unknown-product", f"There is no product {product_id}.", product_id=product_id)
    await set_gate(resources.redis, product_id, product.stock, only_if_missing=True)
    reservation = await reserve(resources.scripts, product_id, quantity)
    if reservation.gate_missing:  # the gate vanished again at once: Redis is in trouble
        raise RedisError("stock gate missing after rebuild")
    return reservation


@post("/buy", status_code=202, summary="Buy a product", operation_id="buy")
async def buy(
    request: Request, resources: NamedDependency[Resources], data: JSONBody[BuyRequest | None] = None
) -> Response[BuyAccepted]:
    wanted = data or BuyRequest()
    client, headers = await enforce_rate_limit("buy", request, resources)

    reservation = await reserve_units(resources, wanted.product_id, wanted.quantity)
    if not reservation.reserved:
        if reservation.left == 0:
            raise problem(409, "sold-out", f"Product {wanted.product_id} is sold out.", headers=headers)
        raise problem(
            409,
            "insufficient-stock",
            f"Only {reservation.left} unit(s) of product {wanted.product_id} are left.",
            headers=headers,
            available=reservation.left,
        )

    order = AdmittedOrder(uuid.uuid4(), wanted.product_id, wanted.quantity, client.ip, datetime.now(UTC))
    try:
        await to_thread.run_sync(
            enqueue_order, resources.queue, order, resources.settings.job_timeout_seconds
        )
    except RedisError:
        await release(resources.redis, order.product_id, order.quantity)
        raise problem(
            503,
            "unavailable",
            "The order could not be queued; nothing was reserved. Try again shortly.",
            headers={**headers, "Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
        ) from None

    status_url = f"/orders/{order.order_id}"
    return Response(
        BuyAccepted(order_id=order.order_id, status_url=status_url),
        status_code=202,
        headers={**headers, "Location": status_url},
    )
