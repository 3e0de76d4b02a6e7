"""Step handlers for FastAPI: dependencies that verify Baton's signature.

::

    from fastapi import Depends, FastAPI

    from baton.fastapi import VerifiedBody, VerifiedStep, add_step_failed_handler
    from baton.handlers import StepFailed, StepRequest

    app = FastAPI()
    add_step_failed_handler(app)          # StepFailed -> {"success": false, ...}
    baton_step = VerifiedStep(SECRETS)    # secrets decoded once, here

    @app.post("/jobs/charge")
    async def charge(step: StepRequest = Depends(baton_step)) -> dict:
        if step.context["total"] <= 0:
            raise StepFailed("nothing to charge", retry=False)
        return {"success": True, "result": {"chargeId": "ch_1"}}

A request whose signature is missing, stale or wrong is answered 401 before the route
runs, one whose body is not a step request 400 (FastAPI's ``{"detail": …}`` body). The
route answers as any FastAPI route; Baton reads ``{"success": true, "result": …}``, or
any other JSON as the result (DESIGN §4). ``baton.starlette.step_endpoint`` works on a
FastAPI app too (``app.add_route(path, step_endpoint(func, secrets=…), ["POST"])``).
Needs the ``fastapi`` extra.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from baton.handlers import (
    Refused,
    Secrets,
    StepFailed,
    StepRequest,
    as_signer,
    read_step,
    verify_body,
)
from baton.signing import DEFAULT_TOLERANCE, InvalidSignature

__all__ = ["VerifiedBody", "VerifiedStep", "add_step_failed_handler", "step_failed_handler"]


class VerifiedStep:
    """A dependency giving the route the verified :class:`~baton.handlers.StepRequest`."""

    def __init__(self, secrets: Secrets, *, tolerance: float = DEFAULT_TOLERANCE) -> None:
        self.signer = as_signer(secrets)
        self.tolerance = tolerance

    async def __call__(self, request: Request) -> StepRequest:
        try:
            return read_step(
                await request.body(), request.headers, self.signer, tolerance=self.tolerance
            )
        except Refused as refused:
            detail = json.loads(refused.answer.content)["error"]
            raise HTTPException(refused.answer.status, detail) from None


class VerifiedBody:
    """A dependency giving the route the verified JSON body (``onComplete`` / ``onError``)."""

    def __init__(self, secrets: Secrets, *, tolerance: float = DEFAULT_TOLERANCE) -> None:
        self.signer = as_signer(secrets)
        self.tolerance = tolerance

    async def __call__(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            return verify_body(raw, request.headers, self.signer, tolerance=self.tolerance)
        except InvalidSignature as exc:
            raise HTTPException(401, f"invalid signature: {exc}") from None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None


async def step_failed_handler(request: Request, exc: Exception) -> JSONResponse:
    """Answer a :class:`~baton.handlers.StepFailed` raised by a route as a failed attempt."""
    assert isinstance(exc, StepFailed)
    return JSONResponse({"success": False, "error": exc.message, "retry": exc.retry})


def add_step_failed_handler(app: FastAPI) -> None:
    """Make ``raise StepFailed(...)`` in any route answer ``{"success": false, …}``."""
    app.add_exception_handler(StepFailed, step_failed_handler)
