"""Logging set-up: plain text by default, one JSON object per line with BATON_LOG_FORMAT=json.

JSON lines carry the workflow and step ids (and the event type) as fields when a
log call passes them, so a log pipeline can follow one workflow.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_FORMATS = ("text", "json")
#: Record attributes copied into JSON lines under their camelCase names.
_FIELDS = {"workflow_id": "workflowId", "step_id": "stepId", "event": "event", "data": "data"}
#: uvicorn's own loggers get the same handler in JSON mode.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and Baton's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for attribute, key in _FIELDS.items():
            value = getattr(record, attribute, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str, fmt: str = "text") -> None:
    """Send Baton's loggers (and, for JSON, uvicorn's) to stderr in the chosen format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    handler._baton = True  # type: ignore[attr-defined]
    root = logging.getLogger("baton")
    root.setLevel(level.upper())
    root.handlers = [h for h in root.handlers if not getattr(h, "_baton", False)]
    root.addHandler(handler)
    root.propagate = False
    if fmt == "json":
        for name in _UVICORN_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers = [handler]
            logger.propagate = False
