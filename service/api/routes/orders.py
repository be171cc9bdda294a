"""``GET /orders/{order_id}``: where an admitted order stands."""

from __future__ import annotations

import uuid

from anyio import to_thread
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from db.models import OrderStatus
from db.orders import find_order
from service.api.problems import problem, problem_responses
from service.api.routes.rate_limited import enforce_rate_limit
from service.api.schemas import OrderView
from service.core.keys import ADMITTED_KEY
from service.sale.resources import Resources


@get(
    "/orders/{order_id:uuid}",
    summary="Follow an order",
    operation_id="getOrder",
    responses=problem_responses(400, 404, 429, 503),
)
async def get_order(
    order_id: FromPath[uuid.UUID], request: Request, resources: NamedDependency[Resources]
) -> Response[OrderView]:
    _, headers = await enforce_rate_limit("orders", request, resources)
    return Response(await _order_view(order_id, resources), headers=headers)


async def _order_view(order_id: uuid.UUID, resources: Resources) -> OrderView:
    # fs:admitted holds exactly the orders admitted and not yet decided: a draining job (or its
    # failure callback) commits the rows first and then settles the batch, so an order missing
    # from it has its row. An order still in it is queued, whatever its draining job's state: a
    # job that gave up without a row (PostgreSQL away) leaves its orders undecided, a dead
    # letter waiting to run again, never terminal without its row.
    if await resources.redis.zscore(ADMITTED_KEY, str(order_id)) is not None:
        return OrderView(order_id=order_id, status=OrderStatus.QUEUED)
    row = await to_thread.run_sync(find_order, resources.engine, order_id)
    if row is not None:
        return OrderView(order_id=order_id, status=row.status, reason=row.reason)
    raise problem(404, "unknown-order", f"There is no order {order_id}.")
