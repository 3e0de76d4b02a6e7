"""Step handlers for Flask: a decorator that verifies Baton's signature.

::

    from flask import Flask

    from baton.flask import step_handler
    from baton.handlers import StepFailed, StepRequest

    app = Flask(__name__)

    @app.post("/jobs/charge")
    @step_handler(SECRETS)
    def charge(step: StepRequest) -> dict:
        if step.context["total"] <= 0:
            raise StepFailed("nothing to charge", retry=False)
        return {"chargeId": "ch_1"}

The view answers as the table of :mod:`baton.handlers` says; it may also return a Flask
``Response``, sent as is. URL variables are passed after the step
(``def charge(step, order_id)``). :func:`verify_request` serves ``onComplete`` /
``onError`` views. Needs the ``flask`` extra.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Response, request

from baton.handlers import (
    Answer,
    Refused,
    Secrets,
    as_signer,
    is_async_callable,
    read_step,
    settle,
    verify_body,
)
from baton.signing import DEFAULT_TOLERANCE

__all__ = ["step_handler", "verify_request"]


def step_handler(
    secrets: Secrets, *, tolerance: float = DEFAULT_TOLERANCE
) -> Callable[[Callable[..., Any]], Callable[..., Response]]:
    """Decorate ``func(step, **url_vars)`` as a view Baton can call.

    Raises:
        InvalidSecret: no secrets were given, or one of them is malformed.
        TypeError: ``func`` is ``async`` (use ``baton.starlette`` or FastAPI for those).
    """
    signer = as_signer(secrets)

    def decorate(func: Callable[..., Any]) -> Callable[..., Response]:
        if is_async_callable(func):
            raise TypeError("step_handler takes a plain function in Flask")

        @functools.wraps(func)
        def view(*args: Any, **kwargs: Any) -> Response:
            try:
                step = read_step(
                    request.get_data(), dict(request.headers), signer, tolerance=tolerance
                )
            except Refused as refused:
                return to_response(refused.answer)
            answer = settle(func, step, lambda: func(step, *args, **kwargs), Response)
            return answer if isinstance(answer, Response) else to_response(answer)

        return view

    return decorate


def verify_request(secrets: Secrets, *, tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Verify the current request's signature and return its JSON object body.

    Raises:
        InvalidSignature: one of its subclasses says why the request is refused.
        ValueError: the body is not a JSON object.
    """
    return verify_body(request.get_data(), dict(request.headers), secrets, tolerance=tolerance)


def to_response(answer: Answer) -> Response:
    return Response(answer.content, status=answer.status, mimetype="application/json")
