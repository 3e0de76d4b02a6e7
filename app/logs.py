"""Logging set-up: plain text by default, one JSON object per line with BATON_LOG_FORMAT=json.

JSON lines carry the workflow and step ids (and the event type) as fields when a
log call passes them, so a log pipeline can follow one workflow.

Every log record made in the process, by Baton or by any library (Tortoise logs its
connection URL and query parameters at DEBUG, uvicorn logs request paths), passes
through a redactor before any handler sees it. It replaces:

- the secrets Baton holds (API keys, signing secrets and their base64 part, the
  callback-token key, the database password), registered with ``add_secrets``;
- the password of any ``scheme://user:password@host`` URL;
- the token of any ``/v1/callbacks/<token>`` path (a token is a capability).

Redaction works on the record, not on a handler, so it holds whatever handlers an
operator configures (``uvicorn --log-config``, a root handler at DEBUG).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import orjson

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_FORMATS = ("text", "json")
#: Record attributes copied into JSON lines under their camelCase names.
_FIELDS = {"workflow_id": "workflowId", "step_id": "stepId", "event": "event", "data": "data"}
#: uvicorn's own loggers get the same handler in JSON mode.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")

#: What a redacted secret reads as (what ``starlette.datastructures.Secret`` shows).
REDACTED = "**********"
#: Shorter values are too likely to be ordinary text to be searched for (and are too
#: short to be good secrets); generated keys are over 40 characters.
MIN_SECRET_LENGTH = 8
#: Secrets remembered at most (the newest are kept); a server holds a handful, a test
#: run that builds many apps more.
MAX_SECRETS = 256

_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@'\"]*:)[^\s/'\"]*@")
_CALLBACK_TOKEN = re.compile(r"(/v1/callbacks/)[^\s/?#'\"]+")


def redact_url(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1***@", url)


def url_password_forms(url: str) -> list[str]:
    """The password in ``url`` as written and as decoded (drivers log either)."""
    match = re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@]*:([^\s/]*)@", url)
    if match is None or not match.group(1):
        return []
    written = match.group(1)
    return list(dict.fromkeys([written, unquote(written)]))


class Redactor:
    """Knows the secrets to hide and hides them in text and in log records."""

    def __init__(self) -> None:
        self._secrets: dict[str, None] = {}
        #: Longest first, so a secret that contains another is hidden whole.
        self._ordered: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._formatter = logging.Formatter()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            for value in values:
                if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
                    self._secrets.pop(value, None)
                    self._secrets[value] = None
            while len(self._secrets) > MAX_SECRETS:
                del self._secrets[next(iter(self._secrets))]
            self._ordered = tuple(sorted(self._secrets, key=len, reverse=True))

    def redact(self, text: str) -> str:
        if "://" in text:
            text = _URL_PASSWORD.sub(r"\1***@", text)
        if "/v1/callbacks/" in text:
            text = _CALLBACK_TOKEN.sub(r"\1<redacted>", text)
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def scrub(self, record: logging.LogRecord) -> None:
        """Redact a record in place: its message, its exception text, its stack."""
        try:
            message = record.getMessage()
        except Exception:
            return  # a broken log call: logging reports it when a handler formats it
        clean = self.redact(message)
        if clean != message:
            self._replace_message(record, clean)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(self._formatter.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)

    def _replace_message(self, record: logging.LogRecord, clean: str) -> None:
        # Keep the arguments when redacting each one gives the same text: formatters
        # such as uvicorn's access log read ``record.args`` as a tuple.
        if isinstance(record.msg, str) and isinstance(record.args, tuple):
            args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
            msg = self.redact(record.msg)
            try:
                if (msg % args if args else msg) == clean:
                    record.msg, record.args = msg, args
                    return
            except (TypeError, ValueError):
                pass
        record.msg, record.args = clean, ()


#: The process's redactor: log records are scrubbed by it wherever they come from.
redactor = Redactor()


def add_secrets(*values: str) -> None:
    """Hide these values from every log line from now on."""
    redactor.add(values)


def signing_secret_forms(secret: str) -> list[str]:
    """A ``whsec_`` secret as written, its base64 part, and that part without padding."""
    written = secret.strip()
    encoded = written.removeprefix("whsec_")
    return [written, encoded, encoded.rstrip("=")]


def _install_record_factory() -> None:
    current = logging.getLogRecordFactory()
    if getattr(current, "_baton_redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        redactor.scrub(record)
        return record

    factory._baton_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


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
        if record.exc_text:
            line["exception"] = record.exc_text
        elif record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # The fields (an event's data) are not part of the message the record's
        # redaction saw: redact the whole line.
        return redactor.redact(orjson.dumps(line, default=str).decode())


def configure_logging(level: str, fmt: str = "text") -> None:
    """Send Baton's loggers (and, for JSON, uvicorn's) to stderr in the chosen format.

    Also makes every log record of the process pass through the redactor.
    """
    _install_record_factory()
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
