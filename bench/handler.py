"""The step handler the benchmarks point Baton at: a minimal raw ASGI app.

Every POST (any path but the two below) is answered at once with
``{"success": true, "result": {...}}``. For each one it records the step id
(``Baton-Step-Id`` header), the arrival time and the time it answered, both
``time.time()`` in this process, so hops between steps can be measured on
one clock.

* ``GET /stats``  -> ``{"count": n, "records": [[step_id, arrived, answered], ...]}``
* ``POST /reset`` -> forgets the records

Run it with ``uvicorn bench.handler:app --no-access-log --log-level warning``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ANSWER = orjson.dumps({"success": True, "result": {"ok": True, "n": 1}})
JSON_HEADERS = [(b"content-type", b"application/json")]
STEP_HEADER = b"baton-step-id"

#: (step id, arrived, answered) per step request, in arrival order.
records: list[tuple[str | None, float, float]] = []


async def _drain(receive: Receive) -> None:
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return
        more = message.get("more_body", False)


async def _answer(send: Send, body: bytes, status: int = 200) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    arrived = time.time()
    method = scope["method"]
    path = scope["path"]
    if method == "GET" and path == "/stats":
        await _answer(send, orjson.dumps({"count": len(records), "records": records}))
        return
    await _drain(receive)
    if method == "POST" and path == "/reset":
        records.clear()
        await _answer(send, b'{"reset": true}')
        return
    if method != "POST":
        await _answer(send, b'{"error": "POST only"}', status=405)
        return
    step_id = None
    for name, value in scope["headers"]:
        if name == STEP_HEADER:
            step_id = value.decode("latin-1")
            break
    answered = time.time()
    records.append((step_id, arrived, answered))
    await _answer(send, ANSWER)
