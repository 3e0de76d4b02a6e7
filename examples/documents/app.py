"""A document-processing handler app in FastAPI: extract → summarize (async) → index.

Run it next to a Baton server (see README.md in this folder)::

    .venv/bin/uvicorn examples.documents.app:app --port 9001

Secrets are read as the order example reads them (``BATON_SIGNING_SECRET``, else
``data/signing-secret``). ``summarize`` is an async step: it answers 202 at once and
finishes later through the step's ``callbackUrl`` with ``baton.AsyncClient``.

(No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run
time, and they name dependencies made in ``create_app``.)
"""

import asyncio
import logging
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, FastAPI
from fastapi.responses import JSONResponse

from baton import AsyncClient, ProblemError, StepFailed, StepRequest
from baton.fastapi import VerifiedBody, VerifiedStep, add_step_failed_handler
from examples.orders.app import load_secrets

logger = logging.getLogger("examples.documents")

#: Seconds the pretend summarizer takes.
SUMMARY_DELAY = 0.2


def summarize_text(text: str, sentences: int = 1) -> str:
    """The first ``sentences`` sentences of ``text``."""
    parts = [part.strip() for part in text.replace("\n", " ").split(".") if part.strip()]
    return ". ".join(parts[:sentences]) + ("." if parts else "")


def create_app(secrets: Sequence[str], client: AsyncClient | None = None) -> FastAPI:
    """The app; ``client`` calls Baton back (one without a key will do: callbacks need none)."""
    callbacks = client or AsyncClient(api_key="")
    app = FastAPI(title="documents")
    add_step_failed_handler(app)
    step_request = VerifiedStep(secrets)
    hook_body = VerifiedBody(secrets)
    Step = Annotated[StepRequest, Depends(step_request)]

    @app.post("/jobs/extract")
    async def extract(step: Step) -> dict[str, Any]:
        text = step.context.get("text")
        if not isinstance(text, str) or not text.strip():
            raise StepFailed("context.text must be a non-empty string", retry=False)
        return {"success": True, "result": {"words": len(text.split()), "text": text}}

    @app.post("/jobs/summarize", status_code=202)
    async def summarize(step: Step, background: BackgroundTasks) -> JSONResponse:
        if step.callback_url is None:
            raise StepFailed("summarize is an async step; it needs a callbackUrl", retry=False)
        background.add_task(finish_summary, callbacks, step)
        return JSONResponse({"async": True}, status_code=202)

    @app.post("/jobs/index")
    def index(step: Step) -> dict[str, Any]:
        summary = step.result_of("summarize")["summary"]
        return {"success": True, "result": {"indexed": step.workflow_id, "chars": len(summary)}}

    @app.post("/hooks/done")
    async def done(body: Annotated[dict[str, Any], Depends(hook_body)]) -> dict[str, bool]:
        logger.info("workflow %s ended %s", body.get("workflowId"), body.get("status"))
        return {"received": True}

    return app


async def finish_summary(client: AsyncClient, step: StepRequest) -> None:
    """Do the slow work, then complete (or fail) the step through its callback URL."""
    assert step.callback_url is not None
    await asyncio.sleep(SUMMARY_DELAY)
    extracted = step.result_of("extract") or {}
    try:
        summary = summarize_text(extracted.get("text", ""), step.context.get("sentences", 1))
        await client.callbacks.complete(step.callback_url, {"summary": summary})
    except ProblemError as exc:
        # 410: Baton stopped waiting (timed out, cancelled or retried meanwhile).
        logger.warning("summary of %s not delivered: %s", step.workflow_id, exc)


app = create_app(load_secrets())
