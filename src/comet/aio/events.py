"""Client-side events through the standard `logging` module.

A library must not print on its own: the client logs `event key=value ...`
lines to the `comet.*` loggers and the application decides where they go
(by default only warnings and errors reach stderr).
"""

from __future__ import annotations

import logging
from typing import Any


class EventLogger:
    """structlog-like calls (`log.info("event", key=value)`) on a stdlib logger."""

    __slots__ = ("_logger",)

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def _emit(self, level: int, event: str, fields: dict[str, Any], exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            text = " ".join([event, *(f"{k}={v}" for k, v in fields.items())])
            self._logger.log(level, "%s", text, exc_info=exc_info)

    def debug(self, event: str, **fields: Any) -> None:
        """Log at DEBUG."""
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log at INFO."""
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log at WARNING."""
        self._emit(logging.WARNING, event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Log at ERROR with the current exception's traceback."""
        self._emit(logging.ERROR, event, fields, exc_info=True)
