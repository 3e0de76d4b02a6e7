"""The same three endpoints in every framework the helpers support, for test_frameworks.py.

- ``/step`` (and ``/step-async``): a step handler running :func:`behave`;
- ``/async``: a step handler answering the framework's own 202 ``{"async": true}``;
- ``/hook``: an ``onComplete`` receiver that verifies the request and echoes the body.

``behave`` reads the step and, by ``context.mode``, succeeds, fails the attempt
(``StepFailed``) or raises. ``CALLS`` records every call of a handler function, so a
test can check that a refused request never reached one.

No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations
at run time, and they name local dependencies.
"""

from typing import Annotated, Any

from baton.handlers import StepFailed, StepRequest
from baton.signing import InvalidSignature, generate_secret

SECRET = generate_secret()
CALLS: list[StepRequest] = []


def behave(step: StepRequest) -> dict[str, Any]:
    CALLS.append(step)
    mode = step.context.get("mode")
    if mode == "fail":
        raise StepFailed("card declined", retry=False)
    if mode == "boom":
        raise KeyError("sku")
    return {
        "total": step.result_of("validate")["total"],
        "attempt": step.attempt,
        "messageId": step.message_id,
    }


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from baton.starlette import step_endpoint, verify_request

    async def later(step: StepRequest) -> Response:
        CALLS.append(step)
        return JSONResponse({"async": True}, status_code=202)

    async def behave_async(step: StepRequest) -> dict[str, Any]:
        return behave(step)

    async def hook(request: Request) -> Response:
        try:
            return JSONResponse(await verify_request(request, SECRET))
        except InvalidSignature as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)

    return Starlette(
        routes=[
            Route("/step", step_endpoint(behave, secrets=SECRET), methods=["POST"]),
            Route("/step-async", step_endpoint(behave_async, secrets=SECRET), methods=["POST"]),
            Route("/async", step_endpoint(later, secrets=SECRET), methods=["POST"]),
            Route("/hook", hook, methods=["POST"]),
        ]
    )


def fastapi_app() -> Any:
    from fastapi import Depends, FastAPI
    from fastapi.responses import JSONResponse

    from baton.fastapi import VerifiedBody, VerifiedStep, add_step_failed_handler

    app = FastAPI()
    add_step_failed_handler(app)
    verified_step = VerifiedStep(SECRET)
    verified_body = VerifiedBody(SECRET)

    @app.post("/step")
    def step(step: Annotated[StepRequest, Depends(verified_step)]) -> dict[str, Any]:
        return {"success": True, "result": behave(step)}

    @app.post("/step-async")
    async def step_async(step: Annotated[StepRequest, Depends(verified_step)]) -> dict[str, Any]:
        return {"success": True, "result": behave(step)}

    @app.post("/async")
    async def later(step: Annotated[StepRequest, Depends(verified_step)]) -> JSONResponse:
        CALLS.append(step)
        return JSONResponse({"async": True}, status_code=202)

    @app.post("/hook")
    async def hook(body: Annotated[dict[str, Any], Depends(verified_body)]) -> dict[str, Any]:
        return body

    return app


def flask_app() -> Any:
    from flask import Flask, jsonify

    from baton.flask import step_handler, verify_request

    app = Flask(__name__)

    @app.post("/step")
    @step_handler(SECRET)
    def step(step: StepRequest) -> dict[str, Any]:
        return behave(step)

    @app.post("/step-async/<int:n>")
    @step_handler([generate_secret(), SECRET])
    def step_with_url_variable(step: StepRequest, n: int) -> dict[str, Any]:
        return {**behave(step), "n": n}

    @app.post("/async")
    @step_handler(SECRET)
    def later(step: StepRequest) -> Any:
        CALLS.append(step)
        return app.response_class('{"async":true}', status=202, mimetype="application/json")

    @app.post("/hook")
    def hook() -> Any:
        try:
            return jsonify(verify_request(SECRET))
        except InvalidSignature as exc:
            return jsonify({"error": str(exc)}), 401

    return app


# --- Django: the URLconf of the settings configured by test_frameworks.py --------------


def _django_views() -> list[Any]:
    from django.http import HttpRequest, HttpResponse, JsonResponse
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    from baton.django import step_view, verify_request

    @step_view(SECRET)
    def step(step: StepRequest) -> dict[str, Any]:
        return behave(step)

    @step_view(SECRET)
    async def step_async(step: StepRequest) -> dict[str, Any]:
        return behave(step)

    @step_view(SECRET)
    def later(step: StepRequest) -> HttpResponse:
        CALLS.append(step)
        return JsonResponse({"async": True}, status=202)

    @csrf_exempt  # the signature proves where the request came from
    def hook(request: HttpRequest) -> HttpResponse:
        try:
            return JsonResponse(verify_request(request, SECRET))
        except InvalidSignature as exc:
            return JsonResponse({"error": str(exc)}, status=401)

    return [
        path("step", step),
        path("step-async", step_async),
        path("async", later),
        path("hook", hook),
    ]


def __getattr__(name: str) -> Any:
    # Django reads `urlpatterns` from the URLconf module once it is configured.
    if name == "urlpatterns":
        return _django_views()
    raise AttributeError(name)
