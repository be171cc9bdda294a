"""``GET /backlog``: the orders waiting for a worker, for the workers' autoscaler.

Internal, like ``/metrics``: not among the ingress's paths, no token (the numbers say nothing
about buyers), never rate limited, counted or traced: KEDA polls it every few seconds.
"""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from opentelemetry.instrumentation.utils import suppress_instrumentation

from service.api.problems import problem_responses
from service.sale.backlog import Backlog, read_backlog
from service.sale.resources import Resources


@get(
    "/backlog",
    summary="Orders waiting for a worker (worker autoscaling's signal)",
    operation_id="backlog",
    responses=problem_responses(503),
)
async def backlog(resources: NamedDependency[Resources]) -> Backlog:
    with suppress_instrumentation():  # polled every few seconds: not worth traces
        return await read_backlog(resources.redis)
