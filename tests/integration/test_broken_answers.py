"""Whatever bytes a target answers, the attempt becomes a report and is settled.

A raw TCP server on loopback answers each request with fixed bytes — broken HTTP
(a bad status line, a header over aiohttp's 8 KiB limit, a bad or unfulfilled
Content-Length, broken chunks, not HTTP at all) or answers the database could not
store as they are (NUL bytes, a JSON ``\\u0000``) — and the real delivery stack
(the aiohttp-backed transport, the deliverer, the dispatcher, the store) handles
them: every attempt is a failed or completed attempt, settled once, and no
delivery slot is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest

from app.db import close_database, open_database
from app.delivery import Deliverer
from app.dispatcher import Dispatcher
from app.engine import DeliveryKind, RetryPolicy
from app.netguard import NetPolicy
from app.schemas import canonical_json, parse_create_request
from app.store import OutboundRequest, Store
from baton.signing import Signer, generate_secret

OK_BODY = b'{"success": true}'
OK_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(OK_BODY)}\r\n\r\n".encode()
    + OK_BODY
)

BROKEN = {
    "bad status line": b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\n{}",
    "header over 8 KiB": b"HTTP/1.1 200 OK\r\nX-Big: "
    + b"a" * 9000
    + b"\r\nContent-Length: 2\r\n\r\n{}",
    "bad Content-Length": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}",
    "body shorter than Content-Length": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}",
    "duplicate Content-Length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3"
    b"\r\n\r\n{}",
    "broken chunks": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "not HTTP": b"garbage\r\n\r\n",
}


class RawServer:
    """Answers every request on a loopback port with the same bytes, then hangs up."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests = 0
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            self.requests += 1
            writer.write(self.answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/step"


@asynccontextmanager
async def raw_server(answer: bytes) -> AsyncIterator[RawServer]:
    server = RawServer(answer)
    listener = await asyncio.start_server(server._handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


def deliverer(max_connections: int = 4) -> Deliverer:
    return Deliverer(
        signer=Signer([generate_secret()]),
        policy=NetPolicy(allow_private=True),
        callback_url=lambda request: None,
        max_connections=max_connections,
    )


def outbound(url: str) -> OutboundRequest:
    return OutboundRequest(
        delivery_id=1,
        workflow_id="wf",
        workflow_name=None,
        kind=DeliveryKind.STEP,
        step_id="a",
        attempt=1,
        message_id="msg_1",
        url=url,
        timeout=5.0,
        policy=RetryPolicy(),
        run_id="run",
        context={},
        previous_steps={},
    )


@pytest.mark.parametrize("form", sorted(BROKEN))
async def test_a_broken_http_answer_is_a_retried_invalid_response(form: str) -> None:
    sender = deliverer()
    try:
        async with raw_server(BROKEN[form]) as server:
            report = await sender.send(outbound(server.url))
    finally:
        await sender.aclose()
    assert report.result.error is not None, report
    assert report.result.error.code == "invalid_response", report.result.error
    assert report.result.error.message.startswith("the answer is not valid HTTP: ")
    assert "\n" not in report.result.error.message
    assert report.result.retryable


async def test_a_hang_up_without_an_answer_is_a_connection_error() -> None:
    sender = deliverer()
    try:
        async with raw_server(b"") as server:
            report = await sender.send(outbound(server.url))
    finally:
        await sender.aclose()
    assert report.result.error is not None and report.result.error.code == "connection_error"
    assert report.result.retryable


async def test_send_reports_even_when_building_the_request_fails() -> None:
    class BrokenSigners:
        async def for_workflow(self, workflow_id: str) -> Signer:
            raise OSError("the database is gone")

    sender = Deliverer(
        signer=Signer([generate_secret()]),
        signers=BrokenSigners(),  # type: ignore[arg-type]
        policy=NetPolicy(allow_private=True),
        callback_url=lambda request: None,
        max_connections=1,
    )
    try:
        report = await sender.send(outbound("http://127.0.0.1:9/step"))
    finally:
        await sender.aclose()
    assert report.result.error is not None and report.result.error.code == "connection_error"
    assert "the database is gone" in report.result.error.message


# --------------------------------------------------------------------- through the store


class Baton:
    def __init__(self, store: Store, dispatcher: Dispatcher) -> None:
        self.store = store
        self.dispatcher = dispatcher

    async def create(self, workflow_id: str, url: str, max_attempts: int = 1) -> None:
        body = {
            "id": workflow_id,
            "steps": [{"id": "a", "url": url, "retries": {"maxAttempts": max_attempts}}],
        }
        model, document = parse_create_request(
            orjson.dumps(body), check_url=lambda u: None, check_condition=lambda s: None
        )
        digest = hashlib.sha256(canonical_json(document)).hexdigest()
        await self.store.create_workflow(model, request_hash=digest)
        self.dispatcher.wake()

    async def wait(self, workflow_id: str, within: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        document: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            document = await self.store.get_workflow(workflow_id)
            assert document is not None
            if document["status"] not in ("pending", "running") and not (
                await self.store.has_pending_deliveries(workflow_id)
            ):
                return document
            await asyncio.sleep(0.02)
        raise AssertionError(f"workflow {workflow_id} did not finish: {document}")


@pytest.fixture
async def baton(database_url: str) -> AsyncIterator[Baton]:
    await open_database(database_url)
    store = Store()
    sender = deliverer(max_connections=2)
    dispatcher = Dispatcher(store, sender, max_concurrency=2, lease_seconds=30)
    dispatcher.start()
    try:
        yield Baton(store, dispatcher)
    finally:
        await dispatcher.stop(grace=1)
        await sender.aclose()
        await close_database()


async def test_broken_answers_fail_their_steps_and_free_every_slot(baton: Baton) -> None:
    """With two delivery slots, four broken answers in a row leave both free."""
    async with raw_server(BROKEN["bad status line"]) as broken, raw_server(OK_ANSWER) as good:
        for i in range(4):
            await baton.create(f"broken-{i}", broken.url)
        for i in range(4):
            document = await baton.wait(f"broken-{i}")
            assert document["status"] == "failed"
            step = document["steps"][0]
            assert step["attempts"] == 1
            assert step["error"]["code"] == "invalid_response"
        assert baton.dispatcher.inflight == 0
        # Ordinary workflows go through right after.
        for i in range(3):
            await baton.create(f"fine-{i}", good.url)
        for i in range(3):
            assert (await baton.wait(f"fine-{i}"))["status"] == "completed"
        assert broken.requests == 4


async def test_a_broken_answer_is_retried_per_the_steps_policy(baton: Baton) -> None:
    async with raw_server(BROKEN["body shorter than Content-Length"]) as broken:
        await baton.create("retried", broken.url, max_attempts=2)
        document = await baton.wait("retried")
    assert document["status"] == "failed"
    assert document["steps"][0]["attempts"] == 2
    assert broken.requests == 2


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"\x00\x01binary\x00", "application/octet-stream", "completed", None),
        (
            b'{"success": true, "result": {"text": "a\\u0000b"}}',
            "application/json",
            "failed",
            "invalid_response",
        ),
        (
            b'{"success": false, "error": "nul\\u0000here", "retry": false}',
            "application/json",
            "failed",
            "handler_error",
        ),
    ],
    ids=["binary", "json-result", "json-error"],
)
async def test_answers_holding_nul_are_settled_once(
    baton: Baton, body: bytes, content_type: str, status: str, code: str | None
) -> None:
    """PostgreSQL refuses NUL in text and jsonb: such answers are made storable on
    arrival, so the step settles and the request goes out exactly once."""
    answer = (
        f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    async with raw_server(answer) as server:
        await baton.create("nul", server.url, max_attempts=3)
        document = await baton.wait("nul")
        await asyncio.sleep(0.2)  # nothing goes out again
        assert server.requests == 1
    step = document["steps"][0]
    assert document["status"] == status
    assert (step["error"] or {}).get("code") == code
    detail = await baton.store.get_step("nul", "a")
    assert detail is not None
    [attempt] = detail["attemptLog"]
    assert "\x00" not in (attempt["responseExcerpt"] or "")
