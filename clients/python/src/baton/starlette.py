"""Step handlers for Starlette apps: verify Baton's signature, call a function, answer.

::

    from baton.starlette import StepFailed, StepRequest, step_endpoint

    async def charge(step: StepRequest) -> dict:
        total = step.result_of("validate")["total"]
        if total > 100_000:
            raise StepFailed("amount needs manual approval", retry=False)
        return {"chargeId": await payments.charge(total)}

    routes = [Route("/jobs/charge", step_endpoint(charge, secrets=SECRETS), methods=["POST"])]

How the endpoint answers is the table of :mod:`baton.handlers`; a function may also
return a Starlette ``Response``, sent as is (e.g. 202 ``{"async": true}``). Needs the
``starlette`` extra (FastAPI apps have it).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from baton.handlers import (
    Answer,
    InvalidStepRequest,
    Refused,
    StepFailed,
    StepFunction,
    StepRequest,
    as_signer,
    asettle,
    is_async_callable,
    name_like,
    read_step,
    verify_body,
)
from baton.signing import DEFAULT_TOLERANCE, Signer

__all__ = ["InvalidStepRequest", "StepFailed", "StepRequest", "step_endpoint", "verify_request"]


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
    signer = as_signer(secrets)
    call_async = is_async_callable(func)

    async def endpoint(request: Request) -> Response:
        try:
            step = read_step(await request.body(), request.headers, signer, tolerance=tolerance)
        except Refused as refused:
            return to_response(refused.answer)

        async def run() -> Any:
            result = await func(step) if call_async else await run_in_threadpool(func, step)
            return await result if inspect.isawaitable(result) else result

        answer = await asettle(func, step, run, Response)
        return answer if isinstance(answer, Response) else to_response(answer)

    # Starlette names routes after their endpoint; keep the step function's name.
    name_like(endpoint, func)
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
    return verify_body(await request.body(), request.headers, secrets, tolerance=tolerance)


def to_response(answer: Answer) -> Response:
    """A Starlette response for ``answer``."""
    return Response(answer.content, status_code=answer.status, media_type="application/json")
