"""The create request (``POST /v1/workflows``): from raw bytes to a ``WorkflowCreate``.

Validation happens in three stages, and everything found is answered at once:

1. ``parse_json_body`` turns bytes into a JSON document. What is not JSON at all
   (empty, not UTF-8, a syntax error, nesting deeper than ``MAX_DEPTH``) is a
   ``BadRequest`` (400); JSON that Baton cannot store (NUL characters, which
   PostgreSQL ``jsonb`` refuses, integers outside 64 bits, floats that overflow) is
   a ``ValidationFailed`` (422) naming each place.
2. The pydantic models below check shapes, types and ranges. They are strict: JSON
   ``"3"`` is not an integer and ``1`` is not a boolean (floats do accept integers).
3. Rules across fields: unique step ids, known dependencies, no cycles, and the
   caller's URL guard and condition compiler on every URL and ``when``.

Problems are ``FieldError``s located by a path in the wire (camelCase) form, such as
``steps[1].retries.maxAttempts``.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

from app.dag import describe_cycle, find_cycle
from app.engine import OnFailure
from app.errors import BadRequest, FieldError, PayloadTooLarge, ValidationFailed

__all__ = [
    "ID_PATTERN",
    "MAX_BATCH_BODY_BYTES",
    "MAX_BATCH_STEPS",
    "MAX_BATCH_WORKFLOWS",
    "MAX_BODY_BYTES",
    "MAX_DELAY_SECONDS",
    "MAX_DEPTH",
    "MAX_STEPS",
    "BatchCreate",
    "CallbackRequest",
    "CancelRequest",
    "NoteRequest",
    "RetryPolicy",
    "ScheduleSpec",
    "StepSpec",
    "WorkflowCreate",
    "canonical_json",
    "parse_batch_request",
    "parse_callback_request",
    "parse_cancel_request",
    "parse_create_request",
    "parse_json_body",
    "parse_note_request",
    "parse_schedule_request",
    "validate_create",
]

#: Largest request body accepted, in bytes (413 beyond).
MAX_BODY_BYTES = 1024 * 1024
#: Most steps one workflow may declare (422 beyond).
MAX_STEPS = 10_000
#: Longest ``delay`` (and longest workflow ``timeout``): 31 days, in seconds.
MAX_DELAY_SECONDS = 2_678_400
#: ``POST /v1/workflows/batch``: most workflows, most steps in all, largest body.
MAX_BATCH_WORKFLOWS = 1000
MAX_BATCH_STEPS = 100_000
MAX_BATCH_BODY_BYTES = 16 * 1024 * 1024
#: Deepest nesting of JSON arrays and objects accepted; the top-level object is level 1.
MAX_DEPTH = 64
#: Workflow and step ids.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
MAX_URL_LENGTH = 2048
MAX_WHEN_LENGTH = 4096
MAX_NAME_LENGTH = 200
#: A single answer lists at most this many problems, so that a 1 MiB body full of
#: mistakes cannot produce a response many times its size.
MAX_REPORTED_ERRORS = 1000

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_ID_RULE = (
    "must be 1 to 128 characters (letters, digits, '_', '.', ':', '-'), "
    "starting with a letter or digit"
)


# --------------------------------------------------------------------------- models


def _check_url_syntax(url: str) -> str:
    """Accept absolute http(s) URLs with a host; the SSRF guard runs later, per request."""
    # Only the ASCII space counts as printable among whitespace and separators.
    if " " in url or not url.isprintable():
        raise PydanticCustomError(
            "url_characters", "must not contain whitespace or control characters"
        )
    try:
        parts = urlsplit(url)
        # ``.port`` is parsed lazily and raises ValueError on a bad port.
        parts.port  # noqa: B018
    except ValueError as exc:
        raise PydanticCustomError(
            "url_parsing", "is not a valid URL: {reason}", {"reason": str(exc)}
        ) from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise PydanticCustomError("url_scheme", "must be an http or https URL")
    if not parts.hostname:
        raise PydanticCustomError("url_host", "must include a host")
    return url


def _check_unique(items: list[str]) -> list[str]:
    """Refuse a dependency listed twice: almost always a copy-paste mistake."""
    seen: set[str] = set()
    for item in items:
        if item in seen:
            raise PydanticCustomError(
                "duplicate_dependency", "lists {step} more than once", {"step": _quote(item)}
            )
        seen.add(item)
    return items


def _integral(value: Any) -> Any:
    """A float with nothing after the point as the integer it is (``3.0`` is 3).

    JSON has one kind of number, and JSON Schema's ``integer`` takes ``3.0``; what
    has a fraction (``3.5``) is left for the strict check to refuse.
    """
    if type(value) is float and value.is_integer():
        return int(value)
    return value


#: An integer field: ``3`` or ``3.0``, never ``3.5``, ``"3"`` or ``true``.
WholeNumber = Annotated[int, BeforeValidator(_integral)]
#: A step or workflow id.
StepId = Annotated[str, Field(pattern=ID_PATTERN)]


def _parse_time(value: Any) -> Any:
    """An ISO 8601 time with its time zone (``2026-12-05T09:00:00Z``), in UTC."""
    if isinstance(value, datetime):
        parsed = value  # built in Python code
    elif not isinstance(value, str):
        raise PydanticCustomError(
            "time_type",
            "must be an ISO 8601 time such as 2026-12-05T09:00:00Z, got {kind}",
            {"kind": _json_type(value)},
        )
    else:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise PydanticCustomError(
                "time_parsing", "is not an ISO 8601 time (such as 2026-12-05T09:00:00Z)"
            ) from exc
    if parsed.tzinfo is None:
        raise PydanticCustomError(
            "time_zone", "must give its time zone: a Z or an offset such as +01:00"
        )
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        raise PydanticCustomError("time_range", "is outside the years 1 to 9999 in UTC") from exc


#: A point in time, sent as ISO 8601 with a time zone; held in UTC.
Time = Annotated[
    datetime, BeforeValidator(_parse_time), Field(json_schema_extra={"format": "date-time"})
]
#: An absolute http(s) URL (a step, a compensation or a callback).
HttpUrl = Annotated[
    str,
    Field(max_length=MAX_URL_LENGTH, json_schema_extra={"format": "uri"}),
    AfterValidator(_check_url_syntax),
]

_MODEL_CONFIG = ConfigDict(
    alias_generator=to_camel,
    # Python code builds models with snake_case names; the wire form is camelCase
    # only (``parse_create_request`` validates by alias alone).
    populate_by_name=True,
    extra="forbid",
    strict=True,
)


class RetryPolicy(BaseModel):
    """How a failed step (or compensation) is retried."""

    model_config = _MODEL_CONFIG

    #: Total attempts, the first one included.
    max_attempts: WholeNumber = Field(default=3, ge=1, le=100)
    backoff: Literal["exponential", "fixed", "linear"] = "exponential"
    #: Seconds before the first retry (the base of the backoff).
    delay: float = Field(default=1.0, ge=0, le=3600, allow_inf_nan=False)
    #: Upper bound of any one wait, in seconds; also caps ``Retry-After``.
    max_delay: float = Field(default=300.0, ge=0, le=86400, allow_inf_nan=False)
    #: Wait a random fraction of the computed delay (full jitter).
    jitter: bool = True


class StepSpec(BaseModel):
    """One step as declared in a create request."""

    model_config = _MODEL_CONFIG

    id: StepId
    url: HttpUrl
    depends_on: Annotated[list[str], AfterValidator(_check_unique)] = Field(default_factory=list)
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    #: Seconds one attempt may take (for async steps: until the callback).
    timeout: float = Field(default=300.0, gt=0, le=86400, allow_inf_nan=False)
    compensation: HttpUrl | None = None
    #: A CEL expression; false means the step is skipped.
    when: str | None = Field(default=None, max_length=MAX_WHEN_LENGTH)
    #: The same as ``onFailure: "ignore"``.
    continue_on_failure: bool = False
    #: What failing for good does to the steps that depend on it (BullMQ's flow options):
    #: ``fail`` (the default), ``ignore``, ``remove`` or ``continue``.
    on_failure: Literal["fail", "ignore", "remove", "continue"] | None = None
    #: Accepted for compatibility and ignored: concurrency follows the DAG.
    parallel: bool | None = Field(default=None, exclude=True)

    @property
    def failure_policy(self) -> OnFailure:
        """``onFailure``, or what ``continueOnFailure`` says when it is not given."""
        if self.on_failure is not None:
            return OnFailure(self.on_failure)
        return OnFailure.IGNORE if self.continue_on_failure else OnFailure.FAIL


class WorkflowCreate(BaseModel):
    """The body of ``POST /v1/workflows``."""

    model_config = _MODEL_CONFIG

    #: Chosen by the client (and then the idempotency key), or generated when absent.
    id: StepId | None = None
    name: str | None = Field(default=None, max_length=MAX_NAME_LENGTH)
    steps: list[StepSpec] = Field(min_length=1, max_length=MAX_STEPS)
    context: dict[str, Any] = Field(default_factory=dict)
    on_complete: HttpUrl | None = None
    on_error: HttpUrl | None = None
    #: Seconds the whole workflow may take (31 days at most), counted from its start.
    timeout: float = Field(default=86400.0, gt=0, le=MAX_DELAY_SECONDS, allow_inf_nan=False)
    saga: bool = False
    fail_fast: bool = True
    #: What ``previousSteps`` holds in step requests: every transitive ancestor, or
    #: only the step's direct dependencies (for long chains).
    previous_steps: Literal["ancestors", "parents"] = "ancestors"
    #: A delayed start: the workflow is ``pending`` until this time (DESIGN §8).
    start_at: Time | None = None
    #: A delayed start: the workflow is ``pending`` for this many seconds (31 days at most).
    delay: float | None = Field(default=None, ge=0, le=MAX_DELAY_SECONDS, allow_inf_nan=False)

    def start_time(self, now: datetime) -> datetime | None:
        """When a workflow created at ``now`` starts, or None for at once (no
        ``startAt``/``delay``, or a time that has come already)."""
        if self.start_at is not None:
            target = self.start_at
        elif self.delay:
            target = now + timedelta(seconds=self.delay)
        else:
            return None
        return target if target > now else None


# ------------------------------------------------------------------------- parsing


class _BadNumber:
    """Stands in for a number that cannot be stored, so the scan can report its path."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class _NonFiniteLiteral(Exception):
    """``NaN``, ``Infinity`` or ``-Infinity``, which Python's parser accepts and JSON does not."""


def _precise_int(literal: str) -> int | _BadNumber:
    # Counting digits first also keeps int() away from its 4300-digit limit.
    digits = len(literal) - literal.startswith("-")
    value = int(literal) if digits <= 19 else None
    if value is None or not _INT64_MIN <= value <= _INT64_MAX:
        return _BadNumber("integer is outside the signed 64-bit range")
    return value


def _precise_float(literal: str) -> float | _BadNumber:
    value = float(literal)
    if math.isinf(value):
        return _BadNumber("number is too large (it overflows a 64-bit float)")
    return value


def _reject_constant(literal: str) -> Any:
    raise _NonFiniteLiteral(literal)


class _RepeatedKeys:
    """An ``object_pairs_hook`` that builds plain dicts and remembers those that lost a key.

    JSON parsers keep the last of repeated keys without a word; Baton refuses them
    instead (``{"id": "a", "id": "b"}`` is a 422, not a workflow ``b``).
    """

    __slots__ = ("found",)

    def __init__(self) -> None:
        #: id of a parsed object -> (the object, kept alive so its id stays its own;
        #: the keys it repeats).
        self.found: dict[int, tuple[dict[str, Any], list[str]]] = {}

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            repeated: list[str] = []
            for key, _ in pairs:
                if key in seen and key not in repeated:
                    repeated.append(key)
                seen.add(key)
            self.found[id(obj)] = (obj, repeated)
        return obj

    def problems(self, doc: Any) -> list[FieldError]:
        """Each repeated key, located by its path in ``doc`` (in document order)."""
        if not self.found:
            return []
        problems: list[FieldError] = []
        stack: list[tuple[Any, _Path]] = [(doc, None)]
        while stack:
            value, path = stack.pop()
            if type(value) is dict:
                entry = self.found.get(id(value))
                if entry is not None and entry[0] is value:
                    problems.extend(
                        FieldError(_render((path, key)), _REPEATED_KEY) for key in entry[1]
                    )
                children: Iterable[tuple[str | int, Any]] = value.items()
            elif type(value) is list:
                children = enumerate(value)
            else:
                continue
            nested = [(child, (path, key)) for key, child in children]
            stack.extend(reversed(nested))
        return problems


_REPEATED_KEY = "this key is repeated in its object; a key may appear once"


def _load_precisely(text: str, repeated: _RepeatedKeys | None = None) -> Any:
    """Parse with the standard library, keeping every number exact.

    orjson turns integers beyond 64 bits into floats without a word and refuses
    floats that overflow without saying where; this slower parser lets the scan
    name the place instead. With ``repeated``, objects that repeat a key are noted
    there.
    """
    return json.loads(
        text,
        parse_int=_precise_int,
        parse_float=_precise_float,
        parse_constant=_reject_constant,
        object_pairs_hook=repeated,
    )


def _may_repeat_a_key(raw: bytes, doc: Any) -> bool:
    """Whether the object members of ``raw`` may outnumber those of ``doc`` (last wins).

    Outside strings, a colon in JSON only separates a key from its value, and
    orjson writes strings back with every colon as it is: without a repeated key,
    ``raw`` and ``doc`` written back hold as many colons. A dropped member takes
    its colon with it, so fewer colons mean a key was repeated. Only a colon
    written as an escape (``\\u003a``) breaks the count; such bodies take the
    slow path. About a millisecond per MiB, against several for a parser that
    calls back per object.
    """
    return b"\\u003" in raw or raw.count(b":") != orjson.dumps(doc).count(b":")


#: Maps every ASCII digit to "0", so a run of N digits becomes b"0" * N.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGIT_RUN = b"0" * 19


def _may_hold_big_int(raw: bytes) -> bool:
    """Whether ``raw`` has 19 digits in a row: needed for an integer beyond 64 bits.

    Every integer of 18 digits or fewer fits, so most bodies never pay for the
    precise parse. Digits inside strings give false alarms, which only cost time.
    """
    return _LONG_DIGIT_RUN in raw.translate(_DIGITS_TO_ZERO)


# A path is built as a linked list of (parent, key) pairs, rendered only on error.
_Path = tuple[Any, str | int] | None
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _format_path(parts: Iterable[str | int]) -> str:
    """``("steps", 1, "retries", "maxAttempts")`` -> ``steps[1].retries.maxAttempts``.

    Keys that are not plain identifiers are written as quoted JSON strings
    (``context["order id"]``), so every path reads back unambiguously.
    """
    out: list[str] = []
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.fullmatch(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{json.dumps(part, ensure_ascii=False)}]")
    return "".join(out)


def _render(path: _Path) -> str:
    parts: list[str | int] = []
    while path is not None:
        path, key = path
        parts.append(key)
    return _format_path(reversed(parts))


def _too_deep() -> BadRequest:
    return BadRequest(f"The JSON document is nested deeper than {MAX_DEPTH} levels.")


def _check_depth(doc: Any) -> None:
    """Raise ``BadRequest`` if arrays and objects nest deeper than ``MAX_DEPTH``."""
    # Level by level: one list comprehension per level beats a per-node loop.
    level = [doc] if type(doc) is dict or type(doc) is list else []
    depth = 1
    while level:
        level = [
            child
            for value in level
            for child in (value.values() if type(value) is dict else value)
            if type(child) is dict or type(child) is list
        ]
        if level and depth == MAX_DEPTH:
            raise _too_deep()
        depth += 1


def _value_problem(value: Any, check_surrogates: bool) -> str | None:
    """What makes a scalar unstorable, or None."""
    kind = type(value)
    if kind is str:
        if "\x00" in value:
            return "must not contain NUL characters (\\u0000)"
        if check_surrogates and not value.isascii() and _has_lone_surrogate(value):
            # Not valid Unicode; orjson refuses these, json only when encoding.
            raise BadRequest(
                "The request body is not valid JSON: a string has an unpaired surrogate."
            )
    elif kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            return "integer is outside the signed 64-bit range"
    elif kind is _BadNumber:
        return str(value.message)
    return None


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _scan(doc: Any, *, check_surrogates: bool) -> list[FieldError]:
    """Find every unstorable value and key in ``doc``, and enforce ``MAX_DEPTH``.

    Past what can be reported, problems are no longer located (the scan goes on for
    the sake of the depth limit): a path costs more than the check that found it.
    """
    problems: list[FieldError] = []
    root_problem = _value_problem(doc, check_surrogates)
    if root_problem is not None:
        return [FieldError("", root_problem)]
    if type(doc) is not dict and type(doc) is not list:
        return problems
    # A key and its value can both be wrong, so twice the cap (plus one) guarantees
    # that more problems than the cap remain after ``_failure`` merges them.
    limit = 2 * MAX_REPORTED_ERRORS + 2
    stack: list[tuple[Any, int, _Path]] = [(doc, 1, None)]
    while stack:
        value, depth, path = stack.pop()
        items: Iterator[tuple[str | int, Any]] = (
            iter(value.items()) if type(value) is dict else enumerate(value)
        )
        nested: list[tuple[Any, int, _Path]] = []
        for key, child in items:
            child_path: _Path = (path, key)
            if type(key) is str and "\x00" in key and len(problems) < limit:
                problems.append(
                    FieldError(_render(child_path), "key must not contain NUL characters (\\u0000)")
                )
            if type(child) is dict or type(child) is list:
                if depth == MAX_DEPTH:
                    raise _too_deep()
                nested.append((child, depth + 1, child_path))
                continue
            problem = _value_problem(child, check_surrogates)
            if problem is not None and len(problems) < limit:
                problems.append(FieldError(_render(child_path), problem))
        # Reversed so that containers are visited, and reported, in document order.
        stack.extend(reversed(nested))
    return problems


def _position(raw: bytes, offset: int) -> str:
    line = raw.count(b"\n", 0, offset) + 1
    column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def _decode_utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"The request body is not valid UTF-8 (byte {exc.start}, {_position(raw, exc.start)})."
        ) from exc


def _syntax_error(exc: orjson.JSONDecodeError) -> BadRequest:
    where = f"line {exc.lineno}, column {exc.colno}"
    if exc.msg == "depth limit exceeded":
        return BadRequest(f"The JSON document is nested deeper than {MAX_DEPTH} levels ({where}).")
    return BadRequest(f"The request body is not valid JSON: {exc.msg} ({where}).")


def _load(raw: bytes, limit: int = MAX_BODY_BYTES) -> tuple[Any, list[FieldError]]:
    """Parse ``raw``; raise ``BadRequest`` for non-JSON, return unstorable values and
    repeated keys found."""
    if len(raw) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    if not raw.strip():
        raise BadRequest("The request body is empty; expected a JSON object.")
    repeated = _RepeatedKeys()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # The standard library accepts a little more than orjson (numbers out of
        # range, NaN, unpaired surrogates); whatever it accepts, the scan then
        # reports with a path. Whatever it refuses too is a syntax error.
        text = _decode_utf8(raw)
        try:
            doc = _load_precisely(text, repeated)
        except _NonFiniteLiteral as literal:
            # orjson stops at the first error, which may be a number before the literal.
            at_literal = str(literal).lstrip("-") in text[exc.pos : exc.pos + 9]
            where = f" (line {exc.lineno}, column {exc.colno})" if at_literal else ""
            raise BadRequest(
                f"The request body is not valid JSON: {literal} is not a JSON number{where}."
            ) from exc
        except (ValueError, RecursionError):
            raise _syntax_error(exc) from exc
        return doc, repeated.problems(doc) + _scan(doc, check_surrogates=True)
    container = type(doc) is dict or type(doc) is list
    if container:
        # Depth first: orjson allows 1024 levels, more than the recursive parser can.
        _check_depth(doc)
    if _may_hold_big_int(raw) or (container and _may_repeat_a_key(raw, doc)):
        doc = _load_precisely(raw.decode("utf-8"), repeated)
        return doc, repeated.problems(doc) + _scan(doc, check_surrogates=False)
    if b"\\u0000" in raw or not container:
        # In valid JSON, a NUL can only be written as this escape.
        return doc, _scan(doc, check_surrogates=False)
    return doc, []


def parse_json_body(raw: bytes) -> Any:
    """Parse a request body into a JSON document that Baton can store.

    Raises ``PayloadTooLarge`` over ``MAX_BODY_BYTES`` (a backstop: the API should
    stop reading sooner); ``BadRequest`` for an empty body, invalid UTF-8, invalid
    JSON (with its line and column), ``NaN``/``Infinity``, or nesting deeper than
    ``MAX_DEPTH``; ``ValidationFailed`` naming the path of every string or key
    holding a NUL character, integer outside the signed 64-bit range and float
    too large for 64 bits.
    """
    doc, problems = _load(raw)
    if problems:
        raise _failure(problems)
    return doc


def canonical_json(doc: Any) -> bytes:
    """Serialize a parsed document with sorted keys and no whitespace, for hashing.

    Equal documents give equal bytes, however their keys were ordered or spaced.
    ``doc`` must be storable (as ``parse_json_body`` returns it).
    """
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


# ------------------------------------------------------------------------- errors

_TYPE_NAMES = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}
_BOUNDS = {
    "greater_than": ("gt", "must be greater than {}"),
    "greater_than_equal": ("ge", "must be at least {}"),
    "less_than": ("lt", "must be less than {}"),
    "less_than_equal": ("le", "must be at most {}"),
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float | _BadNumber):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _quote(value: str, limit: int = 64) -> str:
    """Quote user input for a message, cut short so a message stays a message."""
    if len(value) > limit:
        value = value[: limit - 3] + "..."
    return repr(value)


def _describe(value: Any) -> str:
    """A string quoted, anything else by its JSON type."""
    return _quote(value) if isinstance(value, str) else _json_type(value)


def _model_at(loc: tuple[str | int, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The model whose field ``loc`` names (for suggesting the intended field)."""
    if len(loc) == 1:
        return root
    if root is not WorkflowCreate:
        return None
    if len(loc) == 3 and loc[0] == "steps":
        return StepSpec
    if len(loc) == 4 and loc[0] == "steps" and loc[2] == "retries":
        return RetryPolicy
    return None


def _unknown_field(loc: tuple[str | int, ...], root: type[BaseModel]) -> str:
    key = loc[-1]
    model = _model_at(loc, root)
    if model is None or not isinstance(key, str):
        return "unknown field"
    names = [field.alias or name for name, field in model.model_fields.items()]
    camel = to_camel(key)
    if camel in names:
        return f"unknown field; did you mean {camel!r}?"
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"unknown field; did you mean {close[0]!r}?"
    return "unknown field (expected one of " + ", ".join(names) + ")"


def _message(error: ErrorDetails, root: type[BaseModel]) -> str:
    """A readable message for one pydantic error of a ``root`` body, in JSON terms."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    given = error.get("input")
    if kind in _TYPE_NAMES:
        return f"must be {_TYPE_NAMES[kind]}, got {_json_type(given)}"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return _unknown_field(error["loc"], root)
    if kind in _BOUNDS:
        bound, template = _BOUNDS[kind]
        return template.format(_number(ctx[bound]))
    if kind == "finite_number":
        return "must be a finite number"
    if kind == "literal_error":
        return f"must be {ctx['expected']}, got {_describe(given)}"
    if kind == "string_pattern_mismatch":
        return _ID_RULE
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters, got {len(given)}"
    if kind == "too_short":
        if error["loc"] == ("steps",):
            return "a workflow needs at least one step"
        return f"must have at least {ctx['min_length']} items"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} items"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    # Baton's own custom errors, and anything pydantic adds later: its message
    # (never its documentation URL) is already about the value.
    return error["msg"]


def _pydantic_problems(exc: ValidationError, root: type[BaseModel]) -> list[FieldError]:
    return [
        FieldError(_format_path(error["loc"]), _message(error, root))
        for error in exc.errors(include_url=False)
    ]


def _failure(problems: list[FieldError]) -> ValidationFailed:
    """One ``ValidationFailed`` for every problem, one entry per path, capped in size."""
    seen: set[str] = set()
    unique: list[FieldError] = []
    for problem in problems:
        # A value both unstorable and out of range is one problem to the client.
        if problem.path not in seen:
            seen.add(problem.path)
            unique.append(problem)
    if len(unique) > MAX_REPORTED_ERRORS:
        return ValidationFailed(
            unique[:MAX_REPORTED_ERRORS],
            f"The request has more than {MAX_REPORTED_ERRORS} problems; "
            f"the first {MAX_REPORTED_ERRORS} are listed.",
        )
    return ValidationFailed(unique)


# ---------------------------------------------------------------- cross-field rules


def _option_problems(workflow: WorkflowCreate) -> list[FieldError]:
    """Options that contradict each other."""
    problems: list[FieldError] = []
    if workflow.start_at is not None and workflow.delay is not None:
        problems.append(FieldError("delay", "give startAt or delay, not both"))
    for index, step in enumerate(workflow.steps):
        if step.continue_on_failure and step.on_failure not in (None, OnFailure.IGNORE):
            problems.append(
                FieldError(
                    f"steps[{index}].onFailure",
                    f"{step.on_failure!r} contradicts continueOnFailure: true "
                    "(which is onFailure 'ignore'); give one of them",
                )
            )
    return problems


def _graph_problems(workflow: WorkflowCreate) -> list[FieldError]:
    """Duplicate ids, unknown or self dependencies, and the first cycle."""
    problems: list[FieldError] = []
    first: dict[str, int] = {}
    for index, step in enumerate(workflow.steps):
        if step.id in first:
            problems.append(FieldError(f"steps[{index}].id", f"duplicate step id {step.id!r}"))
        else:
            first[step.id] = index
    deps: dict[str, list[str]] = {}
    for index, step in enumerate(workflow.steps):
        edges: list[str] = []
        for position, dep in enumerate(step.depends_on):
            path = f"steps[{index}].dependsOn[{position}]"
            if dep == step.id:
                problems.append(FieldError(path, f"step {step.id!r} depends on itself"))
            elif dep not in first:
                problems.append(FieldError(path, f"unknown step {_quote(dep)}"))
            else:
                edges.append(dep)
        # With duplicate ids the graph is ambiguous: the first declaration stands.
        if first[step.id] == index:
            deps[step.id] = edges
    cycle = find_cycle(deps)
    if cycle is not None:
        problems.append(FieldError("steps", describe_cycle(cycle)))
    return problems


def _external_problems(
    workflow: WorkflowCreate,
    check_url: Callable[[str], None],
    check_condition: Callable[[str], None],
) -> list[FieldError]:
    """Run the URL guard and the condition compiler once per distinct value."""
    url_verdicts: dict[str, str | None] = {}
    condition_verdicts: dict[str, str | None] = {}

    def url_problem(url: str) -> str | None:
        if url not in url_verdicts:
            try:
                check_url(url)
            except ValueError as exc:
                url_verdicts[url] = str(exc) or "URL is not allowed"
            else:
                url_verdicts[url] = None
        return url_verdicts[url]

    def condition_problem(expression: str) -> str | None:
        if expression not in condition_verdicts:
            try:
                check_condition(expression)
            except Exception as exc:
                # The condition module's errors need not derive from ValueError,
                # and any refusal of the user's expression is the user's problem.
                condition_verdicts[expression] = str(exc) or "invalid expression"
            else:
                condition_verdicts[expression] = None
        return condition_verdicts[expression]

    checks: list[tuple[str, str | None, Callable[[str], str | None]]] = []
    for index, step in enumerate(workflow.steps):
        checks.append((f"steps[{index}].url", step.url, url_problem))
        checks.append((f"steps[{index}].compensation", step.compensation, url_problem))
        checks.append((f"steps[{index}].when", step.when, condition_problem))
    checks.append(("onComplete", workflow.on_complete, url_problem))
    checks.append(("onError", workflow.on_error, url_problem))

    problems: list[FieldError] = []
    for path, value, check in checks:
        if value is not None:
            problem = check(value)
            if problem is not None:
                problems.append(FieldError(path, problem))
    return problems


def validate_create(
    doc: dict[str, Any],
    *,
    check_url: Callable[[str], None],
    check_condition: Callable[[str], None],
) -> tuple[WorkflowCreate | None, list[FieldError]]:
    """Validate a create body already parsed (``parse_json_body``): the model, or None,
    and every problem found, located relative to the body."""
    problems: list[FieldError] = []
    body = doc
    steps = doc.get("steps")
    too_many = isinstance(steps, list) and len(steps) > MAX_STEPS
    if isinstance(steps, list) and too_many:
        # Refuse before validating 10,000+ steps one by one, but still check the rest.
        problems.append(
            FieldError("steps", f"at most {MAX_STEPS} steps are allowed, got {len(steps)}")
        )
        body = {**doc, "steps": []}

    workflow: WorkflowCreate | None = None
    try:
        # By alias only: snake_case names are for Python code, not for the wire.
        workflow = WorkflowCreate.model_validate(body, by_alias=True, by_name=False)
    except ValidationError as exc:
        problems.extend(
            problem
            for problem in _pydantic_problems(exc, WorkflowCreate)
            if not (too_many and problem.path == "steps")
        )

    if workflow is not None:
        problems.extend(_option_problems(workflow))
        problems.extend(_graph_problems(workflow))
        problems.extend(_external_problems(workflow, check_url, check_condition))
    return (None if problems else workflow), problems


def parse_create_request(
    raw: bytes,
    *,
    check_url: Callable[[str], None],
    check_condition: Callable[[str], None],
) -> tuple[WorkflowCreate, Any]:
    """Validate the body of ``POST /v1/workflows``.

    Returns the model and the parsed JSON document (hash it with ``canonical_json``
    for idempotency). ``check_url`` is called on every step, compensation and
    callback URL and refuses one by raising ``ValueError``; ``check_condition`` is
    called on every ``when`` and refuses it by raising any exception. Each is
    called once per distinct value, and only once the shape of the body is valid.

    Raises ``PayloadTooLarge`` and ``BadRequest`` as ``parse_json_body`` does, and
    otherwise one ``ValidationFailed`` listing every problem found.
    """
    doc, problems = _load(raw)
    if type(doc) is not dict:
        raise ValidationFailed([FieldError("", f"must be a JSON object, got {_json_type(doc)}")])
    workflow, found = validate_create(doc, check_url=check_url, check_condition=check_condition)
    problems.extend(found)
    if problems:
        raise _failure(problems)
    assert workflow is not None
    return workflow, doc


def located(prefix: str, path: str) -> str:
    """``path`` (relative to a part of a body) relative to the whole body, the part being
    at ``prefix``: ``located("workflows[2]", "steps[0].id")`` is
    ``workflows[2].steps[0].id``."""
    if not path:
        return prefix
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


class BatchCreate(BaseModel):
    """The body of ``POST /v1/workflows/batch`` (each item is a create body)."""

    model_config = _MODEL_CONFIG

    workflows: list[WorkflowCreate] = Field(min_length=1, max_length=MAX_BATCH_WORKFLOWS)


def parse_batch_request(
    raw: bytes,
    *,
    check_url: Callable[[str], None],
    check_condition: Callable[[str], None],
) -> list[tuple[WorkflowCreate, Any]]:
    """Validate the body of ``POST /v1/workflows/batch``: each workflow as a create is
    validated, problems located by item (``workflows[2].steps[0].id``).

    Answers (model, parsed item) per workflow, in request order. Raises as
    ``parse_create_request`` does (the body may be up to ``MAX_BATCH_BODY_BYTES``,
    each workflow up to ``MAX_BODY_BYTES`` as canonical JSON), and ``ValidationFailed``
    for more than ``MAX_BATCH_WORKFLOWS`` workflows or ``MAX_BATCH_STEPS`` steps, or
    an ``id`` given to two of them.
    """
    doc, problems = _load(raw, MAX_BATCH_BODY_BYTES)
    if problems:
        # Values that cannot be stored (each located): nothing else is worth checking.
        raise _failure(problems)
    if type(doc) is not dict:
        raise ValidationFailed([FieldError("", f"must be a JSON object, got {_json_type(doc)}")])
    extra = sorted(set(doc) - {"workflows"})
    problems.extend(FieldError(key, _unknown_field((key,), BatchCreate)) for key in extra)
    items = doc.get("workflows")
    if not isinstance(items, list):
        problems.append(
            FieldError(
                "workflows",
                "is required" if items is None else f"must be an array, got {_json_type(items)}",
            )
        )
        raise _failure(problems)
    if not items:
        problems.append(FieldError("workflows", "a batch needs at least one workflow"))
    if len(items) > MAX_BATCH_WORKFLOWS:
        problems.append(
            FieldError(
                "workflows",
                f"at most {MAX_BATCH_WORKFLOWS} workflows are allowed, got {len(items)}",
            )
        )
        raise _failure(problems)
    steps = sum(len(i["steps"]) for i in items if type(i) is dict and type(i.get("steps")) is list)
    if steps > MAX_BATCH_STEPS:
        problems.append(
            FieldError("workflows", f"at most {MAX_BATCH_STEPS} steps in all, got {steps}")
        )
        raise _failure(problems)
    parsed: list[tuple[WorkflowCreate, Any]] = []
    first_with: dict[str, int] = {}
    for index, item in enumerate(items):
        prefix = f"workflows[{index}]"
        if type(item) is not dict:
            problems.append(FieldError(prefix, f"must be a JSON object, got {_json_type(item)}"))
            continue
        if len(canonical_json(item)) > MAX_BODY_BYTES:
            problems.append(
                FieldError(prefix, f"one workflow is limited to {MAX_BODY_BYTES} bytes of JSON")
            )
            continue
        workflow, found = validate_create(
            item, check_url=check_url, check_condition=check_condition
        )
        problems.extend(FieldError(located(prefix, p.path), p.message) for p in found)
        if workflow is None:
            continue
        if workflow.id is not None:
            if workflow.id in first_with:
                problems.append(
                    FieldError(
                        f"{prefix}.id",
                        f"workflows[{first_with[workflow.id]}] has the same id; "
                        "each id may appear once in a batch",
                    )
                )
                continue
            first_with[workflow.id] = index
        parsed.append((workflow, item))
    if problems:
        raise _failure(problems)
    return parsed


# ----------------------------------------------------------------------- schedules

#: Schedule ids: a workflow id's rules, short enough for ``-YYYYMMDDTHHMMSSZ`` after it.
SCHEDULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,109}$"
#: Longest ``catchupWindow``: a year, in seconds.
MAX_CATCHUP_WINDOW = 366 * 86400
MAX_NOTE_LENGTH = 1000
#: Fields of a create body that a schedule's ``workflow`` may not have, and why.
_FIRED_WORKFLOW_FIELDS = {
    "id": "a schedule names its workflows itself: {scheduleId}-{YYYYMMDDTHHMMSSZ}",
    "startAt": "a schedule's workflow starts when the schedule fires it",
    "delay": "a schedule's workflow starts when the schedule fires it (see jitter)",
}


class ScheduleSpec(BaseModel):
    """The body of ``PUT /v1/schedules/{id}`` (DESIGN §8)."""

    model_config = _MODEL_CONFIG

    #: Five cron fields (minute hour day-of-month month day-of-week), or an alias.
    cron: str | None = Field(default=None, max_length=256)
    #: Seconds between ticks (instead of ``cron``).
    every: WholeNumber | None = Field(default=None, ge=1, le=366 * 86400)
    #: The IANA time zone the cron fields are read in.
    timezone: str = Field(default="UTC", max_length=64)
    start_at: Time | None = None
    end_at: Time | None = None
    #: Fires in all (triggers included); none after that.
    limit: WholeNumber | None = Field(default=None, ge=1, le=2**31 - 1)
    overlap: Literal["skip", "allow", "buffer_one", "cancel_previous"] = "skip"
    #: Ticks missed while no server ran are fired if younger than this, else recorded missed.
    catchup_window: float = Field(default=300.0, ge=1, le=MAX_CATCHUP_WINDOW, allow_inf_nan=False)
    #: Each fire waits a random delay of up to this many seconds.
    jitter: float = Field(default=0.0, ge=0, le=86400, allow_inf_nan=False)
    paused: bool = False
    note: str | None = Field(default=None, max_length=MAX_NOTE_LENGTH)
    #: A create body without ``id``: what each fire creates.
    workflow: dict[str, Any]


def parse_schedule_request(
    raw: bytes,
    *,
    check_url: Callable[[str], None],
    check_condition: Callable[[str], None],
    check_cadence: Callable[[ScheduleSpec], list[FieldError]],
) -> tuple[ScheduleSpec, WorkflowCreate]:
    """Validate the body of ``PUT /v1/schedules/{id}``: its fields, its cadence
    (``check_cadence`` reads the cron expression and time zone, and answers the
    problems it finds), and its ``workflow`` as a create (problems at
    ``workflow.steps[0].url`` and the like). Raises as ``parse_create_request`` does."""
    doc, problems = _load(raw)
    if type(doc) is not dict:
        raise ValidationFailed([FieldError("", f"must be a JSON object, got {_json_type(doc)}")])
    spec: ScheduleSpec | None = None
    try:
        spec = ScheduleSpec.model_validate(doc, by_alias=True, by_name=False)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, ScheduleSpec))
    if spec is not None:
        if (spec.cron is None) == (spec.every is None):
            problems.append(FieldError("cron", "give cron or every (one of them)"))
        if spec.start_at and spec.end_at and spec.end_at <= spec.start_at:
            problems.append(FieldError("endAt", "must be after startAt"))
        problems.extend(check_cadence(spec))
    workflow: WorkflowCreate | None = None
    body = doc.get("workflow")
    if type(body) is dict:
        problems.extend(
            FieldError(f"workflow.{name}", why)
            for name, why in _FIRED_WORKFLOW_FIELDS.items()
            if name in body
        )
        workflow, found = validate_create(
            body, check_url=check_url, check_condition=check_condition
        )
        problems.extend(FieldError(located("workflow", p.path), p.message) for p in found)
    if problems:
        raise _failure(problems)
    assert spec is not None and workflow is not None
    return spec, workflow


# ------------------------------------------------------------------------- actions


class CancelRequest(BaseModel):
    """The optional body of ``POST /v1/workflows/{id}/cancel``."""

    model_config = _MODEL_CONFIG

    #: Run the compensations of completed steps before the workflow ends.
    compensate: bool = False


def parse_cancel_request(raw: bytes) -> CancelRequest:
    """An empty body means the defaults; anything else must be a valid options object."""
    return _parse_options(raw, CancelRequest)


class NoteRequest(BaseModel):
    """The optional body of ``POST /v1/schedules/{id}/pause`` and ``/resume``."""

    model_config = _MODEL_CONFIG

    #: Why (shown in the schedule's ``note``).
    note: str | None = Field(default=None, max_length=MAX_NOTE_LENGTH)


def parse_note_request(raw: bytes) -> NoteRequest:
    """An empty body means no note; anything else must be ``{"note": "…"}``."""
    return _parse_options(raw, NoteRequest)


def _parse_options(raw: bytes, model: type[_Options]) -> _Options:
    if not raw.strip():
        return model()
    document = parse_json_body(raw)
    if not isinstance(document, dict):
        raise ValidationFailed([FieldError("", f"must be an object, got {_json_type(document)}")])
    try:
        return model.model_validate(document, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise _failure(_pydantic_problems(exc, model)) from exc


_Options = TypeVar("_Options", CancelRequest, NoteRequest)


class CallbackRequest(BaseModel):
    """How an async step's work ended: the body of ``POST /v1/callbacks/{token}``.

    Unknown fields are refused, as in a create (a misspelt ``sucess`` or
    ``results`` would otherwise be lost); ``error`` and ``retry`` may be any JSON
    value, read as a handler's answer reads them.
    """

    model_config = _MODEL_CONFIG

    success: bool = Field(description="Whether the step's work succeeded.")
    result: Any = Field(
        default=None, description="With `success: true`: the step's result (at most 1 MiB)."
    )
    error: Any = Field(
        default=None,
        description="With `success: false`: the message stored as the step's error "
        "(a string; any other JSON value is stored as its JSON text).",
    )
    retry: Any = Field(
        default=None,
        description="With `success: false`: `false` fails the step for good; otherwise "
        "the step is retried under its policy.",
    )


def parse_callback_request(raw: bytes) -> CallbackRequest:
    """Validate the body of a callback; raises as ``parse_json_body`` does, or 422."""
    document = parse_json_body(raw)
    if not isinstance(document, dict):
        raise ValidationFailed(
            [FieldError("", f"must be a JSON object, got {_json_type(document)}")]
        )
    try:
        return CallbackRequest.model_validate(document, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise _failure(_pydantic_problems(exc, CallbackRequest)) from exc
