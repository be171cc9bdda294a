"""Logs on stderr, in one of two forms:

- JSON lines (pods, files, pipes): one object per line with the trace and span ids of the
  span current when the line was written (so a log line leads to its trace);
- console lines (a person's terminal, ``make run``): time, level, logger, message, then the
  same structured extras as ``key=value``, coloured unless ``NO_COLOR`` is set.

``FLASHSALE_LOG_FORMAT`` chooses: ``auto`` (the default: console when stderr is a terminal,
else JSON), ``json`` or ``console``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TextIO

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_NOT_EXTRAS = _RECORD_FIELDS | {"color_message"}  # uvicorn's coloured copy of the message
_LEVEL_COLOURS = {"DEBUG": "2", "INFO": "32", "WARNING": "33", "ERROR": "31", "CRITICAL": "1;31"}


class TraceIds(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (hex, as trace backends show them) inside a span."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


class AtDebug(logging.Filter):
    """On a logger, writes its INFO records with these format strings at DEBUG: shown only when
    that logger is enabled for DEBUG (for RQ's maintenance chatter: see worker/runner.py)."""

    def __init__(self, *messages: str) -> None:
        super().__init__()
        self.messages = frozenset(messages)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.msg not in self.messages:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def colour_on(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _paint(code: str, text: str, colour: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if colour else text


def _value(value: object) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(c.isspace() or c in '"=' for c in text) else text


class ConsoleFormatter(logging.Formatter):
    """``12:00:01.234 INFO    flashsale.dev  message  key=value …`` for a person's terminal."""

    def __init__(self, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        clock = f"{time.strftime('%H:%M:%S', time.localtime(record.created))}.{int(record.msecs):03d}"
        level = record.levelname
        parts = [
            _paint("2", clock, self.colour),
            _paint(_LEVEL_COLOURS.get(level, "0"), level.ljust(7), self.colour),
            _paint("36", record.name, self.colour),
            record.getMessage(),
        ]
        parts += [
            f"{_paint('2', f'{key}=', self.colour)}{_value(value)}"
            for key, value in vars(record).items()
            if key not in _NOT_EXTRAS
        ]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def coloured_logs() -> bool:
    """Whether the lines :func:`configure_logging` set up are coloured."""
    return any(
        isinstance(handler.formatter, ConsoleFormatter) and handler.formatter.colour
        for handler in logging.getLogger().handlers
    )


def _formatter(log_format: str, stream: TextIO) -> logging.Formatter:
    if log_format == "console" or (log_format == "auto" and stream.isatty()):
        return ConsoleFormatter(colour=colour_on(stream))
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def configure_logging(level: str, log_format: str | None = None) -> None:
    """Everything to stderr at ``level``; ``log_format`` (``auto``, ``json`` or ``console``)
    defaults to ``FLASHSALE_LOG_FORMAT`` as the settings read it."""
    if log_format is None:
        from service.core.settings import get_settings

        log_format = get_settings().log_format
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(log_format, sys.stderr))
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
