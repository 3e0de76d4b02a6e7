"""Step handlers for Starlette apps: verify Baton's signature, call a function, answer.

::

    from baton.starlette import StepFailed, StepRequest, step_endpoint

    async def charge(step: StepRequest) -> dict:
        total = step.result_of("validate")["total"]
        if total > 100_000:
            raise StepFailed("amount needs manual approval", retry=False)
        return {"chargeId": await payments.charge(total)}

    routes = [Route("/jobs/charge", step_endpoint(charge, secrets=SECRETS), methods=["POST"])]

How the endpoint answers (see the handler table in DESIGN §4 for what Baton makes of it):

=====================================  ======  ==============================================
what happened                          status  body
=====================================  ======  ==============================================
function returned ``value``            200     ``{"success": true, "result": value}``
function returned a ``Response``       as is   as is (e.g. 202 ``{"async": true}``)
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
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from baton.signing import DEFAULT_TOLERANCE, ID_HEADER, InvalidSignature, Signer

__all__ = ["InvalidStepRequest", "StepFailed", "StepRequest", "step_endpoint", "verify_request"]

logger = logging.getLogger(__name__)

StepFunction = Callable[["StepRequest"], Any]
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
        )

    def result_of(self, step_id: str) -> Any:
        """Return the result of the earlier step ``step_id`` (None if it was skipped or failed).

        Raises:
            KeyError: ``step_id`` is not an ancestor of this step.
        """
        previous = self.previous_steps[step_id]
        return previous.get("result") if isinstance(previous, dict) else None


def step_endpoint(
    func: StepFunction,
    *,
    secrets: str | Sequence[str] | Signer,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap ``func(step_request)`` as a Starlette endpoint that Baton can call.

    ``func`` may be a plain or an ``async`` function; a plain one runs in a worker thread
    so it may block. It returns the step's result (anything JSON can encode) or a
    ``Response`` sent as is, and raises :class:`StepFailed` to fail the attempt. Secrets
    are decoded here, so a malformed one fails when the app is built, not per request.

    Raises:
        InvalidSecret: no secrets were given, or one of them is malformed.
    """
    signer = secrets if isinstance(secrets, Signer) else Signer(secrets)
    call_async = _is_async_callable(func)

    async def endpoint(request: Request) -> Response:
        try:
            body = await verify_request(request, signer, tolerance=tolerance)
        except InvalidSignature as exc:
            return JSONResponse({"error": f"invalid signature: {exc}"}, status_code=401)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            step = StepRequest.from_body(body, message_id=request.headers.get(ID_HEADER, ""))
        except InvalidStepRequest as exc:
            return JSONResponse({"error": f"invalid step request: {exc}"}, status_code=400)

        try:
            result = await func(step) if call_async else await run_in_threadpool(func, step)
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, Response):
                return result
            # Encoded inside the try: a result JSON cannot encode is the function's bug,
            # answered like any other exception it raises.
            return JSONResponse({"success": True, "result": result})
        except StepFailed as exc:
            return JSONResponse({"success": False, "error": exc.message, "retry": exc.retry})
        except Exception as exc:
            logger.exception(
                "step function %s failed (workflow %s, step %s, attempt %d)",
                getattr(func, "__qualname__", repr(func)),
                step.workflow_id,
                step.step_id,
                step.attempt,
            )
            return JSONResponse(
                {"success": False, "error": f"{type(exc).__name__}: {exc}"}, status_code=500
            )

    # Starlette names routes after their endpoint; keep the step function's name.
    endpoint.__name__ = getattr(func, "__name__", endpoint.__name__)
    endpoint.__qualname__ = getattr(func, "__qualname__", endpoint.__qualname__)
    endpoint.__doc__ = getattr(func, "__doc__", None)
    return endpoint


async def verify_request(
    request: Request,
    secrets: str | Sequence[str] | Signer,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """Verify a request's Standard Webhooks signature and return its JSON object body.

    For endpoints that take Baton's ``onComplete`` / ``onError`` callbacks, or that
    want to answer in their own way. Pass a :class:`Signer` to decode secrets once.

    Raises:
        InvalidSignature: one of its subclasses says why the request is refused.
        ValueError: the body is not a JSON object (it was signed, but is not Baton's).
    """
    signer = secrets if isinstance(secrets, Signer) else Signer(secrets)
    raw = await request.body()
    signer.verify(raw, request.headers, tolerance=tolerance)
    try:
        body = json.loads(raw)
    except ValueError:
        raise ValueError("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    return body


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


def _is_async_callable(func: Callable[..., Any]) -> bool:
    # An instance whose __call__ is async is not itself a coroutine function.
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)
