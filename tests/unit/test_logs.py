"""Log redaction: secrets, URL passwords and callback tokens never reach a handler."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest
from uvicorn.logging import AccessFormatter

from app.logs import (
    MAX_SECRETS,
    REDACTED,
    JsonFormatter,
    Redactor,
    add_secrets,
    configure_logging,
    redact_url,
    signing_secret_forms,
    url_password_forms,
)
from baton.signing import generate_secret

SECRET = "bk_very-secret-api-key-value"


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Iterator[ListHandler]:
    """Records of a library logger (propagating, at DEBUG) with the redaction installed."""
    configure_logging("info", "text")
    handler = ListHandler()
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logger = logging.getLogger("tests.library")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_a_registered_secret_is_replaced_wherever_it_appears() -> None:
    redactor = Redactor()
    redactor.add([SECRET])
    assert redactor.redact(f"key={SECRET}; again {SECRET}!") == f"key={REDACTED}; again {REDACTED}!"


def test_a_secret_containing_another_is_hidden_whole() -> None:
    redactor = Redactor()
    secret = generate_secret()
    redactor.add(signing_secret_forms(secret))
    assert redactor.redact(f"[{secret}]") == f"[{REDACTED}]"
    encoded = secret.removeprefix("whsec_")
    assert redactor.redact(f"[{encoded}]") == f"[{REDACTED}]"
    assert redactor.redact(f"[{encoded.rstrip('=')}]") == f"[{REDACTED}]"


def test_short_values_are_not_searched_for() -> None:
    redactor = Redactor()
    redactor.add(["k1", "pass", ""])
    assert redactor.redact("k1 pass") == "k1 pass"


def test_the_newest_secrets_are_kept() -> None:
    redactor = Redactor()
    redactor.add([f"old-secret-{i:04}" for i in range(MAX_SECRETS)])
    redactor.add([SECRET])
    assert redactor.redact(SECRET) == REDACTED
    assert redactor.redact("old-secret-0000") == "old-secret-0000"
    assert redactor.redact(f"old-secret-{MAX_SECRETS - 1:04}") == REDACTED


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgres://baton:hunter22@db:5432/baton", "postgres://baton:***@db:5432/baton"),
        ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("asyncpg://u:p@ss@h/db", "asyncpg://u:***@h/db"),
        ("'postgres://u:secret@h/db'", "'postgres://u:***@h/db'"),
        ("a postgres://u:x@h/db and http://v:y@i/", "a postgres://u:***@h/db and http://v:***@i/"),
        ("postgres://u@h/db", "postgres://u@h/db"),
        ("postgres://u:@h/db", "postgres://u:***@h/db"),
        ("http://host:8000/path", "http://host:8000/path"),
        ("sqlite://data/baton.sqlite3", "sqlite://data/baton.sqlite3"),
    ],
)
def test_url_passwords_are_hidden(text: str, expected: str) -> None:
    assert redact_url(text) == expected
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize(
    ("url", "forms"),
    [
        ("postgres://u:p%40ss@h/db", ["p%40ss", "p@ss"]),
        ("postgres://u:plain@h/db", ["plain"]),
        ("postgres://u@h/db", []),
        ("sqlite://data/x.db", []),
    ],
)
def test_the_password_of_a_url_in_both_spellings(url: str, forms: list[str]) -> None:
    assert url_password_forms(url) == forms


@pytest.mark.parametrize(
    "text",
    [
        "POST /v1/callbacks/WyJ3ZiIsImEiXQ.aBc.dEf HTTP/1.1",
        "POST /v1/callbacks/WyJ3ZiIsImEiXQ.aBc.dEf/heartbeat HTTP/1.1",
        "{'path': '/v1/callbacks/WyJ3ZiIsImEiXQ.aBc.dEf', 'raw_path': b'/v1/callbacks/WyJ3'}",
        "http://baton.example/v1/callbacks/WyJ3ZiIsImEiXQ.aBc.dEf?x=1",
    ],
)
def test_callback_tokens_are_hidden(text: str) -> None:
    redacted = Redactor().redact(text)
    assert "WyJ3" not in redacted
    assert "/v1/callbacks/<redacted>" in redacted


def test_a_library_log_line_is_redacted_before_any_handler(captured: ListHandler) -> None:
    add_secrets(SECRET)
    logger = logging.getLogger("tests.library")
    logger.debug("INSERT ... VALUES ($1,$2): %s", ["callback-token", SECRET])
    logger.debug("connections: %r", {"pg": "postgres://baton:pw-1234@db/baton"})
    logger.info("plain %s line", "harmless")

    assert captured.lines == [
        f"tests.library INSERT ... VALUES ($1,$2): ['callback-token', '{REDACTED}']",
        "tests.library connections: {'pg': 'postgres://baton:***@db/baton'}",
        "tests.library plain harmless line",
    ]
    # An untouched record keeps its arguments.
    assert captured.records[2].args == ("harmless",)


def test_the_access_log_keeps_its_arguments(captured: ListHandler) -> None:
    captured.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'))
    logging.getLogger("tests.library").info(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5000",
        "POST",
        "/v1/callbacks/WyJ3ZiJd.abc.def/heartbeat",
        "1.1",
        200,
    )
    assert captured.lines == [
        '127.0.0.1:5000 - "POST /v1/callbacks/<redacted>/heartbeat HTTP/1.1" 200 OK'
    ]


def test_an_exception_text_is_redacted(captured: ListHandler) -> None:
    add_secrets(SECRET)
    try:
        raise RuntimeError(f"cannot connect to postgres://u:pw-99@h/db with {SECRET}")
    except RuntimeError:
        logging.getLogger("tests.library").exception("failed")
    [line] = captured.lines
    assert "Traceback" in line
    assert SECRET not in line and "pw-99" not in line
    assert "postgres://u:***@h/db" in line


def test_a_secret_in_a_non_string_argument_is_redacted(captured: ListHandler) -> None:
    add_secrets(SECRET)

    class Holder:
        def __repr__(self) -> str:
            return f"Holder({SECRET})"

    logging.getLogger("tests.library").warning("got %r and %d", Holder(), 3)
    assert captured.lines == [f"tests.library got Holder({REDACTED}) and 3"]


def test_a_broken_log_call_is_left_to_logging(captured: ListHandler) -> None:
    record = logging.LogRecord("tests.library", logging.INFO, __file__, 1, "%d", ("x",), None)
    Redactor().scrub(record)  # does not raise
    assert record.args == ("x",)


def test_json_lines_are_redacted_fields_included() -> None:
    add_secrets(SECRET)
    record = logging.LogRecord(
        "baton.events", logging.INFO, __file__, 1, "event %s", (SECRET,), None
    )
    record.data = {"error": f"handler said {SECRET}", "url": "http://u:pw-77@h/x"}
    line = orjson.loads(JsonFormatter().format(record))
    assert SECRET not in orjson.dumps(line).decode()
    assert line["data"] == {"error": f"handler said {REDACTED}", "url": "http://u:***@h/x"}


def test_the_record_factory_is_installed_once() -> None:
    configure_logging("info", "text")
    factory = logging.getLogRecordFactory()
    configure_logging("debug", "text")
    assert logging.getLogRecordFactory() is factory
    configure_logging("info", "text")
