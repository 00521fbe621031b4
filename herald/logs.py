"""Structured logging for every Herald process: one JSON object per line, with the request id."""

from __future__ import annotations

import contextvars
import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from herald.settings import Settings

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(settings: Settings, process: str) -> None:
    """Send all logs to stderr, as JSON lines (or readable text with HERALD_LOG_FORMAT=console)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{name}{message}{request_id}",
                style="{",
                rename_fields={"levelname": "level", "name": "logger"},
                static_fields={"process": process},
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-7s [{process}] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Library chatter below WARNING says nothing an operator needs.
    for noisy in ("aio_pika", "aiormq", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
