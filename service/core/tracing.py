"""OpenTelemetry tracing, configured from the standard ``OTEL_*`` variables.

``OTEL_TRACES_EXPORTER`` picks the exporter: ``otlp`` (OTLP over HTTP to
``OTEL_EXPORTER_OTLP_ENDPOINT``), ``console``, or ``none`` (the default: no spans at all).
The SDK itself reads ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``. Redis calls are traced in the API,
SQL in the workers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import Span

EXPORTERS = ("otlp", "console", "none")
tracer = trace.get_tracer("flashsale")
_installed: TracerProvider | None = None


class TracingError(ValueError):
    """OTEL_TRACES_EXPORTER names an exporter we do not ship."""


def chosen_exporter() -> str:
    """OTEL_TRACES_EXPORTER, checked: the CLI calls this first, so a typo is a clear exit 2."""
    name = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower() or "none"
    if name not in EXPORTERS:
        raise TracingError(f"OTEL_TRACES_EXPORTER: must be one of {', '.join(EXPORTERS)}, not {name!r}")
    return name


def configure_tracing(default_service_name: str, trace_redis: bool = True) -> TracerProvider | None:
    """Install this process's tracer provider, once; None when tracing is off.

    ``trace_redis`` is off in workers: RQ's own polling would make a root span every few
    seconds; their database work is what their traces show."""
    exporter_name = chosen_exporter()
    global _installed
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        _installed = current
        return current
    if exporter_name == "none":
        return None
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", default_service_name)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter(exporter_name)))
    trace.set_tracer_provider(provider)
    _installed = provider
    if trace_redis:
        RedisInstrumentor().instrument(tracer_provider=provider)
    return provider


def trace_engine(engine) -> None:
    """Trace this engine's SQL (and its optimistic-lock transactions) when tracing is on."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().instrument(engine=engine, tracer_provider=provider)


def _exporter(name: str):
    if name == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def tracing_on() -> bool:
    """True once configure_tracing installed a tracer provider in this process. A flag, not
    ``trace.get_tracer_provider()``, which reads os.environ on every call while none is set."""
    return _installed is not None


def trace_carrier() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``…), to travel with a job."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from(carrier: Mapping[str, str] | None):
    """The trace context a job carried; an empty context when it carried none."""
    return propagate.extract(dict(carrier or {}))


def record(span: Span, **attributes) -> None:
    """Set ``flashsale.<name>`` attributes, skipping None (span attributes cannot hold it)."""
    if span.is_recording():
        span.set_attributes({f"flashsale.{k}": v for k, v in attributes.items() if v is not None})
