"""Logging set-up: one format for Baton's loggers and uvicorn's."""

from __future__ import annotations

import logging

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str) -> None:
    root = logging.getLogger("baton")
    root.setLevel(level.upper())
    if not any(getattr(h, "_baton", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._baton = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.propagate = False
