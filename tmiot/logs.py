"""Logging set-up, in one place: structlog for our code and the stdlib's.

Only entry points call :func:`configure_logging`. JSON lines in production,
a readable console renderer for people.
"""

from __future__ import annotations

import logging
import sys

import structlog

from tmiot.config import LogFormat, LogSettings

__all__ = ["configure_logging"]


def configure_logging(settings: LogSettings) -> None:
    """Route structlog and stdlib logging through one processor chain to stderr."""
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.types.Processor
    if settings.format is LogFormat.JSON:
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Client libraries are chatty at INFO (every rebalance, every reconnect).
    for noisy in ("aiokafka", "kafka", "faust", "mode", "urllib3", "docker"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
