"""What every step-handler helper shares, whatever the web framework.

A helper (``baton.starlette``, ``baton.fastapi``, ``baton.flask``, ``baton.django``)
reads the raw body and the headers, asks :func:`read_step` for a verified
:class:`StepRequest` (or the 401/400 :class:`Answer` that refuses the request), calls
the user's function, and turns what it returned or raised into an answer with
:func:`answer_result` / :func:`answer_error`. How Baton reads the answers is in DESIGN
§4; in short:

=====================================  ======  ==============================================
what happened                          status  body
=====================================  ======  ==============================================
function returned ``value``            200     ``{"success": true, "result": value}``
function returned a framework response as is   as is (e.g. 202 ``{"async": true}``)
function raised ``StepFailed``         200     ``{"success": false, "error": …, "retry": …}``
function raised anything else          500     ``{"success": false, "error": "Class: msg"}``
signature missing, stale or wrong      401     ``{"error": …}`` (the function is not called)
body is not a JSON object              400     ``{"error": …}`` (the function is not called)
=====================================  ======  ==============================================
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from baton.signing import DEFAULT_TOLERANCE, ID_HEADER, InvalidSignature, Signer, _header

__all__ = [
    "Answer",
    "InvalidStepRequest",
    "Refused",
    "StepFailed",
    "StepRequest",
    "answer_error",
    "answer_result",
    "as_signer",
    "asettle",
    "is_async_callable",
    "parse_body",
    "read_step",
    "settle",
    "verify_body",
]

logger = logging.getLogger("baton.handlers")

StepFunction = Callable[["StepRequest"], Any]
Secrets = str | Sequence[str] | Signer
_T = TypeVar("_T")


class StepFailed(Exception):
    """Raise from a step function to report a failed attempt without a stack trace.

    ``retry=False`` tells Baton that trying again cannot help (bad input, a declined
    card), so the step fails at once instead of using up its remaining attempts.
    """

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry


class InvalidStepRequest(ValueError):
    """A correctly signed body that is not a step request Baton would send."""


class Answer(NamedTuple):
    """An answer to send: its status and its JSON body, already encoded."""

    status: int
    content: bytes

    @classmethod
    def json(cls, status: int, body: Any) -> Answer:
        """Encode ``body`` (raises ``TypeError`` / ``ValueError`` if JSON cannot hold it)."""
        text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return cls(status, text.encode("utf-8"))


class Refused(Exception):
    """The request is not to be handled; ``answer`` says why (401 or 400)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.content.decode("utf-8"))
        self.answer = answer


@dataclass(frozen=True)
class StepRequest:
    """What Baton sent to a step or compensation URL (the camelCase body, in snake_case).

    ``raw`` is the whole parsed body, for fields this class does not name (and for the
    ``onComplete`` / ``onError`` requests, whose shape is different). ``message_id`` is
    the ``webhook-id`` header: the same for every automatic retry of one step run, so
    it serves as an idempotency key.
    """

    workflow_id: str
    workflow_name: str | None
    step_id: str | None
    attempt: int
    kind: str
    context: dict[str, Any]
    previous_steps: dict[str, Any]
    deadline: datetime | None
    callback_url: str | None
    compensating: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False)
    message_id: str = ""
    #: ``{"id", "scheduledAt"}`` when a schedule fired the workflow, else None.
    schedule: dict[str, Any] | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any], *, message_id: str = "") -> StepRequest:
        """Build a StepRequest from a parsed request body.

        Raises:
            InvalidStepRequest: a field Baton always sends is missing or has the wrong type.
        """
        workflow_id = body.get("workflowId")
        if not isinstance(workflow_id, str) or not workflow_id:
            raise InvalidStepRequest("workflowId must be a non-empty string")
        attempt = body.get("attempt", 1)
        if not isinstance(attempt, int) or isinstance(attempt, bool):
            raise InvalidStepRequest("attempt must be an integer")
        return cls(
            workflow_id=workflow_id,
            workflow_name=_optional(body, "workflowName", str),
            step_id=_optional(body, "stepId", str),
            attempt=attempt,
            kind=_optional(body, "kind", str) or "step",
            context=_optional(body, "context", dict) or {},
            previous_steps=_optional(body, "previousSteps", dict) or {},
            deadline=_parse_time(_optional(body, "deadline", str)),
            callback_url=_optional(body, "callbackUrl", str),
            compensating=_optional(body, "compensating", dict),
            raw=dict(body),
            message_id=message_id,
            schedule=_optional(body, "schedule", dict),
        )

    def result_of(self, step_id: str) -> Any:
        """Return the result of the earlier step ``step_id`` (None if it was skipped or failed).

        Raises:
            KeyError: ``step_id`` is not an ancestor of this step.
        """
        previous = self.previous_steps[step_id]
        return previous.get("result") if isinstance(previous, dict) else None


def as_signer(secrets: Secrets) -> Signer:
    """A :class:`Signer` for ``secrets`` (decoded now, so a bad secret fails at start-up)."""
    return secrets if isinstance(secrets, Signer) else Signer(secrets)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``.

    Raises:
        ValueError: the body is not valid JSON, or not an object.
    """
    try:
        body = json.loads(raw)
    except ValueError:
        raise ValueError("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    return body


def verify_body(
    raw: bytes,
    headers: Mapping[str, str],
    secrets: Secrets,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """Verify a request's signature and return its JSON object body.

    Raises:
        InvalidSignature: one of its subclasses says why the request is refused.
        ValueError: the body is not a JSON object (it was signed, but is not Baton's).
    """
    as_signer(secrets).verify(raw, headers, tolerance=tolerance)
    return parse_body(raw)


def read_step(
    raw: bytes,
    headers: Mapping[str, str],
    signer: Signer,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> StepRequest:
    """Verify and parse a step request.

    Raises:
        Refused: with a 401 answer (bad signature) or a 400 answer (not a step request).
    """
    try:
        body = verify_body(raw, headers, signer, tolerance=tolerance)
    except InvalidSignature as exc:
        raise Refused(Answer.json(401, {"error": f"invalid signature: {exc}"})) from None
    except ValueError as exc:
        raise Refused(Answer.json(400, {"error": str(exc)})) from None
    try:
        return StepRequest.from_body(body, message_id=_header(headers, ID_HEADER) or "")
    except InvalidStepRequest as exc:
        raise Refused(Answer.json(400, {"error": f"invalid step request: {exc}"})) from None


def answer_result(result: Any) -> Answer:
    """The answer for a step function that returned ``result``.

    Raises:
        TypeError, ValueError: JSON cannot encode ``result`` (the function's bug; answer
            it with :func:`answer_error`).
    """
    return Answer.json(200, {"success": True, "result": result})


def answer_error(exc: Exception, func: Callable[..., Any], step: StepRequest) -> Answer:
    """The answer for a step function that raised ``exc``: a failed attempt.

    :class:`StepFailed` answers 200 ``success: false`` with its message; anything else
    is logged with its traceback and answers 500, which Baton retries.
    """
    if isinstance(exc, StepFailed):
        return Answer.json(200, {"success": False, "error": exc.message, "retry": exc.retry})
    logger.error(
        "step function %s failed (workflow %s, step %s, attempt %d)",
        getattr(func, "__qualname__", repr(func)),
        step.workflow_id,
        step.step_id,
        step.attempt,
        exc_info=exc,
    )
    return Answer.json(500, {"success": False, "error": f"{type(exc).__name__}: {exc}"})


def settle(func: StepFunction, step: StepRequest, run: Callable[[], Any], native: type) -> Any:
    """Call ``run()`` (the step function) and return what to answer.

    A ``native`` response (the framework's own class) is returned as is; any other value
    becomes :func:`answer_result`'s :class:`Answer`, an exception :func:`answer_error`'s.
    """
    try:
        result = run()
        # Encoded inside the try: a result JSON cannot encode is the function's bug,
        # answered like any other exception it raises.
        return result if isinstance(result, native) else answer_result(result)
    except Exception as exc:
        return answer_error(exc, func, step)


async def asettle(
    func: StepFunction, step: StepRequest, run: Callable[[], Awaitable[Any]], native: type
) -> Any:
    """The ``async`` twin of :func:`settle`."""
    try:
        result = await run()
        return result if isinstance(result, native) else answer_result(result)
    except Exception as exc:
        return answer_error(exc, func, step)


def is_async_callable(func: Callable[..., Any]) -> bool:
    """Whether calling ``func`` returns a coroutine (an instance with ``async __call__`` too)."""
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)


def name_like(wrapper: Callable[..., Any], func: Callable[..., Any]) -> None:
    """Give ``wrapper`` the name and docstring of ``func`` (frameworks name routes by them)."""
    wrapper.__name__ = getattr(func, "__name__", wrapper.__name__)
    wrapper.__qualname__ = getattr(func, "__qualname__", wrapper.__qualname__)
    wrapper.__doc__ = getattr(func, "__doc__", None)


def _optional(body: Mapping[str, Any], name: str, kind: type[_T]) -> _T | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, kind):
        raise InvalidStepRequest(f"{name} must be {_TYPE_NAMES.get(kind, kind.__name__)}")
    return value


_TYPE_NAMES: dict[type, str] = {str: "a string", dict: "an object"}


def _parse_time(value: str | None) -> datetime | None:
    # A deadline Baton could not format should not fail the step: the handler can
    # still read it from `raw`.
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
