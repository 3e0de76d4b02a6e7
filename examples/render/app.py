"""A handler app with an async step: ``render`` answers at once and calls back when done.

The workflow (``GET /workflow.json``) is ``render → publish``. Rendering a document
takes a while — a second per page here — longer than a request should be held
open and longer than the step's 5 s ``timeout``. So ``render`` answers ``202``
with ``{"async": true}`` at once and does the work in the background: it sends a
heartbeat after each page, which moves the step's deadline out by its timeout,
and finally calls the step's ``callbackUrl`` with the result (or the failure).
``publish`` is an ordinary step that reads that result.

Run it next to a Baton server (see README.md in this folder)::

    .venv/bin/uvicorn examples.render.app:app --port 9001

``context.pages`` (default 8) sets the length of the document; ``context.fail``
(``/workflow.json?fail=yes``) makes the rendering fail for good, through the same
callback. The signing secret is found as in the orders example
(``examples.common.load_secrets``).
"""

from __future__ import annotations

import asyncio
import secrets as _random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from baton.signing import Signer
from baton.starlette import StepFailed, StepRequest, step_endpoint
from examples.common import load_secrets, workflow_endpoint

WORKFLOW = Path(__file__).with_name("workflow.json")
#: How long rendering one page takes, in seconds.
SECONDS_PER_PAGE = 1.0

#: Renders under way: a task must be referenced until it ends.
background: set[asyncio.Task[None]] = set()


class RenderFailed(Exception):
    """The document cannot be rendered; retrying will not help."""


async def render(step: StepRequest) -> Response:
    """Start rendering in the background and tell Baton the answer comes later."""
    print(f"render: step {step.step_id} workflow={step.workflow_id} attempt={step.attempt}")
    if step.callback_url is None:
        raise StepFailed("no callbackUrl in the step request", retry=False)
    task = asyncio.create_task(finish_render(step, step.callback_url))
    background.add(task)
    task.add_done_callback(background.discard)
    return JSONResponse({"async": True}, status_code=202)


def callback_client() -> httpx.AsyncClient:
    """The client that calls Baton back."""
    return httpx.AsyncClient(timeout=10)


async def finish_render(step: StepRequest, callback_url: str) -> None:
    """Render page after page, with a heartbeat after each, then call Baton back."""
    async with callback_client() as client:
        try:
            pages = await render_document(
                step, heartbeat=lambda: client.post(f"{callback_url}/heartbeat")
            )
        except RenderFailed as exc:
            body: dict[str, Any] = {"success": False, "error": str(exc), "retry": False}
        except Exception as exc:
            # Anything else may pass: Baton retries the step (a new request, a new URL).
            body = {"success": False, "error": f"{type(exc).__name__}: {exc}"}
        else:
            body = {
                "success": True,
                "result": {"document": f"doc_{_random.token_hex(6)}", "pages": pages},
            }
        answer = await client.post(callback_url, json=body)
        # 200: recorded. 410: Baton stopped waiting (timed out, cancelled, retried, expired).
        print(
            f"render: called back workflow={step.workflow_id} -> {answer.status_code} {answer.text}"
        )


async def render_document(
    step: StepRequest, *, heartbeat: Callable[[], Awaitable[httpx.Response]]
) -> int:
    """Stands in for the real work: a second per page, a heartbeat after each."""
    if step.context.get("fail"):
        raise RenderFailed("the template is broken (context.fail)")
    pages = int(step.context.get("pages", 8))
    for page in range(1, pages + 1):
        await asyncio.sleep(SECONDS_PER_PAGE)
        response = await heartbeat()
        # 409 until Baton has recorded the 202: harmless, the next one will do.
        print(f"render: page {page}/{pages} workflow={step.workflow_id}: {response.status_code}")
    return pages


def publish(step: StepRequest) -> dict[str, Any]:
    """An ordinary step after the async one: it reads what the callback reported."""
    rendered = step.result_of("render")
    print(f"render: publish {rendered['document']} workflow={step.workflow_id}")
    return {"url": f"https://docs.example/{rendered['document']}.pdf", "pages": rendered["pages"]}


def create_app(secrets: list[str] | None = None) -> Starlette:
    """Build the app; ``secrets`` default to :func:`examples.common.load_secrets`."""
    signer = Signer(secrets if secrets is not None else load_secrets())
    return Starlette(
        routes=[
            Route("/jobs/render", step_endpoint(render, secrets=signer), methods=["POST"]),
            Route("/jobs/publish", step_endpoint(publish, secrets=signer), methods=["POST"]),
            Route("/workflow.json", workflow_endpoint(WORKFLOW), methods=["GET"]),
        ]
    )


app = create_app()
