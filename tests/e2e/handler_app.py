"""A real step/callback handler for the end-to-end tests, run in its own uvicorn process.

Every ``POST /steps/{name}`` and ``POST /hooks/{name}`` is recorded (headers, raw body,
parsed JSON, receive and end times, whether the Standard Webhooks signature verified
with the secret in ``HANDLER_SIGNING_SECRET``) and answered from the script for
``name``, or with the default ``200 {"success": true, "result": {"step": name,
"attempt": <Baton-Attempt>}}``.

Control API (used by ``harness.HandlerClient``):

- ``POST /_control/script`` ``{name: [response, ...]}``: response *i* answers the
  *i*-th request to ``name`` counted from this call; the last one repeats. A response
  is ``{"status": 200, "json": {...} | "body": "raw text", "headers": {...},
  "delay": seconds}``; without ``json`` or ``body`` a 2xx other than 204 gets the
  default JSON answer and anything else an empty body.
- A response may also carry ``"then": [action, ...]``: after the answer has been sent,
  the handler performs the actions one after the other, each
  ``{"delay": seconds, "path": "/heartbeat", "url": "...", "json": {...} | "body": "..."}``:
  wait ``delay``, then POST to ``url``, or by default to the ``callbackUrl`` of the
  request body plus ``path`` (empty by default). What came of each is appended to the
  record's ``followups`` as ``{"url", "status", "json", "body", "error", "sent_mono",
  "ended_mono"}``. This is how a scripted async step calls Baton back.
- ``POST /_control/reset`` forgets every script and record.
- ``GET /_control/requests?name=&prefix=`` → ``{"items": [record, ...]}`` in arrival order.
- ``GET /_control/stats?prefix=&kind=`` → counts over the matching records, small enough
  to poll while thousands are kept: ``received``, ``answered``, ``inflight``,
  ``distinct`` (pairs of ``Baton-Workflow-Id`` and name), and ``receivedByOrigin`` /
  ``inflightByOrigin`` keyed by the scheme and host of the body's ``callbackUrl`` (which
  names the Baton server that sent the request; ``""`` when there is none).
- ``GET /_control/health`` → ``{"ok": true}``.

Run it with ``uvicorn --app-dir tests/e2e handler_app:app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SECRET_ENV = "HANDLER_SIGNING_SECRET"
#: How long one follow-up request may take.
FOLLOWUP_TIMEOUT = 10.0


class State:
    """Scripts and records, kept in memory for the life of the process."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.scripts: dict[str, list[dict[str, Any]]] = {}
        #: Requests seen per name since its script was set; picks the scripted response.
        self.counts: dict[str, int] = {}
        self.seq = 0

    def reset(self) -> None:
        self.records.clear()
        self.scripts.clear()
        self.counts.clear()

    def next_response(self, name: str) -> dict[str, Any] | None:
        script = self.scripts.get(name)
        index = self.counts.get(name, 0)
        self.counts[name] = index + 1
        if not script:
            return None
        return script[min(index, len(script) - 1)]


state = State()


def _verifier() -> Webhook | None:
    secret = os.environ.get(SECRET_ENV, "")
    return Webhook(secret) if secret else None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _attempt(value: str | None) -> int | str | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


def _default_answer(name: str, attempt: str | None) -> dict[str, Any]:
    return {"success": True, "result": {"step": name, "attempt": _attempt(attempt)}}


def _build_response(name: str, attempt: str | None, scripted: dict[str, Any] | None) -> Response:
    if scripted is None:
        return JSONResponse(_default_answer(name, attempt))
    status = int(scripted.get("status", 200))
    headers = dict(scripted.get("headers") or {})
    if "json" in scripted:
        return JSONResponse(scripted["json"], status_code=status, headers=headers)
    if "body" in scripted:
        headers.setdefault("content-type", "text/plain; charset=utf-8")
        return Response(scripted["body"], status_code=status, headers=headers)
    if 200 <= status < 300 and status != 204:
        return JSONResponse(_default_answer(name, attempt), status_code=status, headers=headers)
    return Response(b"", status_code=status, headers=headers)


async def receive(request: Request) -> Response:
    received_mono = time.monotonic()
    received_at = time.time()
    name = request.path_params["name"]
    raw = await request.body()
    body = raw.decode("utf-8", errors="replace")
    headers = {key.lower(): value for key, value in request.headers.items()}
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = None
    verified = False
    verify_error: str | None = None
    verifier = _verifier()
    if verifier is None:
        verify_error = f"{SECRET_ENV} is not set"
    else:
        try:
            verifier.verify(body, headers)
            verified = True
        except Exception as exc:
            verify_error = f"{type(exc).__name__}: {exc}"
    state.seq += 1
    record: dict[str, Any] = {
        "seq": state.seq,
        "path": request.url.path,
        "kind": request.url.path.split("/")[1],
        "name": name,
        "method": request.method,
        "headers": headers,
        "body": body,
        "json": parsed,
        "received_mono": received_mono,
        "received_at": received_at,
        "received_iso": _now_iso(),
        "ended_mono": None,
        "ended_at": None,
        "verified": verified,
        "verify_error": verify_error,
        "response_status": None,
    }
    # Appended before any delay so that the records keep arrival order.
    state.records.append(record)
    scripted = state.next_response(name)
    delay = float((scripted or {}).get("delay") or 0)
    if delay > 0:
        await asyncio.sleep(delay)
    response = _build_response(name, headers.get("baton-attempt"), scripted)
    actions = (scripted or {}).get("then")
    if actions:
        record["followups"] = []
        response.background = BackgroundTask(_follow_up, record, list(actions))
    record["response_status"] = response.status_code
    record["ended_mono"] = time.monotonic()
    record["ended_at"] = time.time()
    return response


async def _follow_up(record: dict[str, Any], actions: list[dict[str, Any]]) -> None:
    """Run a response's ``then`` actions in order, after the answer has been sent."""
    parsed = record["json"]
    callback_url = parsed.get("callbackUrl") if isinstance(parsed, dict) else None
    async with httpx.AsyncClient(timeout=FOLLOWUP_TIMEOUT, trust_env=False) as client:
        for action in actions:
            delay = float(action.get("delay") or 0)
            if delay > 0:
                await asyncio.sleep(delay)
            url = action.get("url") or (
                f"{callback_url}{action.get('path', '')}" if callback_url else None
            )
            outcome: dict[str, Any] = {
                "url": url,
                "status": None,
                "json": None,
                "body": None,
                "error": None,
                "sent_mono": time.monotonic(),
                "ended_mono": None,
            }
            if url is None:
                outcome["error"] = "no url and no callbackUrl in the request body"
            else:
                try:
                    if "body" in action:
                        answer = await client.post(url, content=str(action["body"]).encode())
                    else:
                        answer = await client.post(url, json=action.get("json", {}))
                    outcome["status"] = answer.status_code
                    outcome["body"] = answer.text
                    with contextlib.suppress(ValueError):
                        outcome["json"] = answer.json()
                except httpx.HTTPError as exc:
                    outcome["error"] = f"{type(exc).__name__}: {exc}"
            outcome["ended_mono"] = time.monotonic()
            record["followups"].append(outcome)


async def set_script(request: Request) -> Response:
    payload = await request.json()
    if not isinstance(payload, dict):
        return JSONResponse({"error": "expected {name: [response, ...]}"}, status_code=400)
    for name, responses in payload.items():
        if isinstance(responses, dict):
            responses = [responses]
        if not isinstance(responses, list) or not all(isinstance(r, dict) for r in responses):
            return JSONResponse({"error": f"script for {name!r} is not a list"}, status_code=400)
        state.scripts[name] = responses
        state.counts[name] = 0
    return JSONResponse({"ok": True, "names": sorted(state.scripts)})


async def reset(request: Request) -> Response:
    state.reset()
    return JSONResponse({"ok": True})


async def list_requests(request: Request) -> Response:
    name = request.query_params.get("name")
    prefix = request.query_params.get("prefix")
    items = [
        record
        for record in state.records
        if (name is None or record["name"] == name)
        and (prefix is None or record["name"].startswith(prefix))
    ]
    return JSONResponse({"items": items})


def _origin(record: dict[str, Any]) -> str:
    parsed = record["json"]
    url = parsed.get("callbackUrl") if isinstance(parsed, dict) else None
    if not isinstance(url, str):
        return ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def stats(request: Request) -> Response:
    prefix = request.query_params.get("prefix")
    kind = request.query_params.get("kind")
    received = answered = 0
    pairs: set[tuple[str | None, str]] = set()
    by_origin: Counter[str] = Counter()
    inflight_by_origin: Counter[str] = Counter()
    for record in state.records:
        if prefix is not None and not record["name"].startswith(prefix):
            continue
        if kind is not None and record["kind"] != kind:
            continue
        received += 1
        origin = _origin(record)
        by_origin[origin] += 1
        if record["ended_mono"] is None:
            inflight_by_origin[origin] += 1
        else:
            answered += 1
        pairs.add((record["headers"].get("baton-workflow-id"), record["name"]))
    return JSONResponse(
        {
            "received": received,
            "answered": answered,
            "inflight": received - answered,
            "distinct": len(pairs),
            "receivedByOrigin": dict(by_origin),
            "inflightByOrigin": dict(inflight_by_origin),
        }
    )


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True, "verifying": _verifier() is not None})


routes = [
    Route("/steps/{name}", receive, methods=["POST"]),
    Route("/hooks/{name}", receive, methods=["POST"]),
    # Lets follow-ups aim at the handler itself, e.g. ``callbackUrl + "/heartbeat"``.
    Route("/hooks/{name}/heartbeat", receive, methods=["POST"]),
    Route("/_control/script", set_script, methods=["POST"]),
    Route("/_control/reset", reset, methods=["POST"]),
    Route("/_control/requests", list_requests, methods=["GET"]),
    Route("/_control/stats", stats, methods=["GET"]),
    Route("/_control/health", health, methods=["GET"]),
]

app = Starlette(routes=routes)
