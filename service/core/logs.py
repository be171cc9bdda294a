"""Structured logs: one JSON object per line on stderr, with the trace and span ids of the
span current when the line was written (so a log line leads to its trace)."""

from __future__ import annotations

import logging
import sys
import time

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter


class TraceIds(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (hex, as trace backends show them) inside a span."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(TraceIds())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


class Throttled:
    """At most one line per key and ``interval``, saying how many it held back: an outage
    repeats the same failure thousands of times a second, and a line each would spend CPU
    and log storage just when the pods need them."""

    def __init__(self, logger: logging.Logger, interval: float = 1.0) -> None:
        self.logger, self.interval = logger, interval
        self._last: dict[str, tuple[float, int]] = {}
        """Per key: when its line was last written, and the lines held back since."""

    def warning(self, key: str, message: str, **extra: object) -> None:
        now = time.monotonic()
        last, held_back = self._last.get(key, (float("-inf"), 0))
        if now - last < self.interval:
            self._last[key] = (last, held_back + 1)
            return
        self._last[key] = (now, 0)
        self.logger.warning(message, extra={**extra, "unlogged_before": held_back})
