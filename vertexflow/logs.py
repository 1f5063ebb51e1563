"""Logging: structlog, readable lines on a terminal, JSON lines with ``--log-format json``.

Logs go to stderr (stdout carries summaries and listings). A processor drops
the values of keys that look like secrets, as a second line of defence:
messages are built without secrets in the first place.

Modules take their logger from :func:`get_logger`, which imports structlog
only when the first event at or above the configured level is logged:
importing structlog (its console renderer, processors and stdlib glue) took
~50 ms of every run's start-up, and most runs log nothing at the default
level (warning).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_SECRET_WORDS = ("token", "secret", "password", "authorization", "credential")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "exception": logging.ERROR, "critical": logging.CRITICAL}

#: events below this level are dropped before structlog is imported; until configure() (vertexflow
#: used as a library, a Dask worker) warnings and worse only, as the command line's default: the
#: per-object info lines of a copy must not reach a host program's stdout uninvited
_threshold = logging.WARNING
#: the (format, level) configure() was given, applied when structlog is first needed
_pending: tuple[str, str] | None = None


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in event:
        if any(word in key.lower() for word in _SECRET_WORDS):
            event[key] = "***"
    return event


def configure(fmt: str = "auto", level: str = "warning") -> None:
    """Configure logging; ``fmt`` is ``console``, ``json`` or ``auto`` (console on a terminal)."""
    global _threshold, _pending
    _threshold = getattr(logging, level.upper())
    _pending = (fmt, level)
    if "structlog" in sys.modules:  # already paid for: configure now, as before
        _apply()


def set_level(level: str) -> None:
    """Let events from ``level`` up through (tests capturing them with structlog's ``capture_logs``)."""
    global _threshold
    _threshold = getattr(logging, level.upper())


def _apply() -> None:
    global _pending
    if _pending is None:
        return
    import structlog

    fmt, level = _pending
    _pending = None
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


class Logger:
    """A module's logger: structlog's, fetched on the first event that passes the configured level."""

    __slots__ = ("_name", "_real")

    def __init__(self, name: str) -> None:
        self._name = name
        self._real: Any = None

    def _emit(self, method: str, event: str, kw: dict[str, Any]) -> None:
        if _LEVELS[method] < _threshold:
            return
        if self._real is None:
            import structlog

            _apply()
            self._real = structlog.get_logger(self._name)
        getattr(self._real, method)(event, **kw)

    def debug(self, event: str, **kw: Any) -> None:
        self._emit("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._emit("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._emit("error", event, kw)

    def exception(self, event: str, **kw: Any) -> None:
        self._emit("exception", event, kw)

    def critical(self, event: str, **kw: Any) -> None:
        self._emit("critical", event, kw)


def get_logger(name: str) -> Logger:
    return Logger(name)
