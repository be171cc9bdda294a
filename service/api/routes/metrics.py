"""``GET /metrics``: Prometheus's exposition format, documented as the text it is."""

from __future__ import annotations

from litestar import Response, get
from litestar.plugins.prometheus import PrometheusController


class MetricsController(PrometheusController):
    @get(media_type="text/plain", summary="Prometheus metrics", operation_id="metrics")
    async def get(self) -> Response:
        return await PrometheusController.get.fn(self)
