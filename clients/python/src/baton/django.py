"""Step handlers for Django: a view decorator that verifies Baton's signature.

::

    # views.py
    from baton.django import step_view
    from baton.handlers import StepFailed, StepRequest

    @step_view(SECRETS)
    def charge(step: StepRequest) -> dict:
        if step.context["total"] <= 0:
            raise StepFailed("nothing to charge", retry=False)
        return {"chargeId": "ch_1"}

    # urls.py
    urlpatterns = [path("jobs/charge", views.charge)]

The view accepts POST only (405 otherwise), is exempt from CSRF checks (the signature
is the proof of origin), and answers as the table of :mod:`baton.handlers` says; it may
return a Django ``HttpResponse``, sent as is. ``async def`` functions make async views.
URL parameters are passed after the step. :func:`verify_request` serves ``onComplete``
/ ``onError`` views. Needs the ``django`` extra.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from baton.handlers import (
    Answer,
    Refused,
    Secrets,
    StepRequest,
    as_signer,
    asettle,
    is_async_callable,
    read_step,
    settle,
    verify_body,
)
from baton.signing import DEFAULT_TOLERANCE, Signer

__all__ = ["step_view", "verify_request"]


def step_view(
    secrets: Secrets, *, tolerance: float = DEFAULT_TOLERANCE
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate ``func(step, *url_args, **url_kwargs)`` as a view Baton can call.

    Raises:
        InvalidSecret: no secrets were given, or one of them is malformed.
    """
    signer = as_signer(secrets)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        if is_async_callable(func):

            async def async_view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                step = _step(request, signer, tolerance)
                if not isinstance(step, StepRequest):
                    return step
                run = functools.partial(func, step, *args, **kwargs)
                return _respond(await asettle(func, step, run, HttpResponseBase))

            return csrf_exempt(functools.wraps(func)(async_view))

        def view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            step = _step(request, signer, tolerance)
            if not isinstance(step, StepRequest):
                return step
            run = functools.partial(func, step, *args, **kwargs)
            return _respond(settle(func, step, run, HttpResponseBase))

        return csrf_exempt(functools.wraps(func)(view))

    return decorate


def verify_request(
    request: HttpRequest, secrets: Secrets, *, tolerance: float = DEFAULT_TOLERANCE
) -> dict[str, Any]:
    """Verify a request's signature and return its JSON object body.

    Raises:
        InvalidSignature: one of its subclasses says why the request is refused.
        ValueError: the body is not a JSON object.
    """
    return verify_body(request.body, request.headers, secrets, tolerance=tolerance)


def _step(request: HttpRequest, signer: Signer, tolerance: float) -> StepRequest | HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    try:
        return read_step(request.body, request.headers, signer, tolerance=tolerance)
    except Refused as refused:
        return _respond(refused.answer)


def _respond(answer: Answer | HttpResponseBase) -> Any:
    if isinstance(answer, HttpResponseBase):
        return answer
    return HttpResponse(answer.content, status=answer.status, content_type="application/json")
