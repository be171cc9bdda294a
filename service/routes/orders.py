"""``GET /orders/{order_id}``: where an admitted order stands."""

from __future__ import annotations

import uuid

from anyio import to_thread
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from db.models import OrderStatus, RejectReason
from db.orders import find_order
from service.errors import problem, problem_responses
from service.resources import Resources
from service.routes.rate_limited import enforce_rate_limit
from service.schemas import OrderView
from worker.queue import ADMITTED_KEY, job_key, order_job_id

GAVE_UP_JOB_STATES = {"failed", "stopped", "canceled"}


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
    # fs:admitted holds exactly the orders admitted and not yet decided: a worker commits the
    # row first and then removes the order, so an order missing from it has its row, whichever
    # job's batch decided it. Its job state only tells a job that gave up without a row.
    job_id = order_job_id(str(order_id))
    async with resources.redis.pipeline(transaction=False) as pipe:
        pipe.zscore(ADMITTED_KEY, job_id)
        pipe.hget(job_key(str(order_id)), "status")
        still_open, job_state = await pipe.execute()
    if still_open is not None and job_state not in GAVE_UP_JOB_STATES:
        return OrderView(order_id=order_id, status=OrderStatus.QUEUED)
    row = await to_thread.run_sync(find_order, resources.engine, order_id)
    if row is not None:
        return OrderView(order_id=order_id, status=row.status, reason=row.reason)
    if job_state in GAVE_UP_JOB_STATES:
        return OrderView(order_id=order_id, status=OrderStatus.REJECTED, reason=RejectReason.FAILED)
    raise problem(404, "unknown-order", f"There is no order {order_id}.")
