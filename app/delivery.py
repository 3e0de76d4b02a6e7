"""Outgoing requests: build the signed request for a claimed delivery, send it, classify the answer.

One pooled ``httpx.AsyncClient`` per process. Its transport is aiohttp-backed
(several times the throughput of httpx's default transport on this kind of
machine) and resolves host names through the SSRF guard, so the connection
goes to exactly the addresses that were checked. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from app import __version__
from app.engine import (
    MAX_RESULT_BYTES,
    AttemptResult,
    DeliveryKind,
    StepErrorCode,
    classify_answer,
    classify_connection_error,
    classify_malformed_answer,
    classify_timeout,
    iso,
)
from app.netguard import (
    MalformedAnswer,
    NetPolicy,
    UnsafeURL,
    check_url_for_delivery,
    make_transport,
)
from app.store import OutboundRequest, Report
from app.tenants import NamespaceSigners, public_id
from app.tokens import MAX_LIFETIME, CallbackClaim, CallbackTokens
from baton.signing import Signer

log = logging.getLogger("baton.delivery")

USER_AGENT = f"Baton/{__version__}"
#: Connecting gets at most this long, whatever the step's timeout.
CONNECT_TIMEOUT = 10.0
#: Step URLs remembered as having passed the static SSRF check.
CHECKED_URLS = 10_000


def build_body(
    request: OutboundRequest, *, deadline: datetime, callback_url: str | None
) -> dict[str, Any]:
    """The JSON body of DESIGN §4 for a request."""
    if request.payload is not None:
        return request.payload
    body: dict[str, Any] = {
        "workflowId": public_id(request.workflow_id),
        "workflowName": request.workflow_name,
        "stepId": request.step_id,
        "attempt": request.attempt,
        "kind": request.kind.value,
        "context": request.context,
        "previousSteps": request.previous_steps or {},
        "deadline": iso(deadline),
        "callbackUrl": callback_url,
    }
    if request.compensating is not None:
        body["compensating"] = request.compensating
    if request.schedule is not None:
        body["schedule"] = request.schedule
    return body


def build_request(
    request: OutboundRequest, *, now: datetime, signer: Signer, callback_url: str | None
) -> tuple[dict[str, str], bytes]:
    """The headers and body of a request sent at ``now`` (also how the console shows
    the request an attempt sent, from the attempt's start time)."""
    deadline = now + timedelta(seconds=request.timeout)
    body = orjson.dumps(build_body(request, deadline=deadline, callback_url=callback_url))
    headers = signer.headers(request.message_id, int(now.timestamp()), body)
    headers.update(
        {
            "Content-Type": "application/json",
            "Baton-Workflow-Id": public_id(request.workflow_id),
            "Baton-Attempt": str(request.attempt),
            "Baton-Kind": request.kind.value,
        }
    )
    if request.step_id is not None:
        headers["Baton-Step-Id"] = request.step_id
    return headers, body


def step_callback_url(
    tokens: CallbackTokens, public_url: str, request: OutboundRequest
) -> str | None:
    """The ``callbackUrl`` of a step request: a token bound to this attempt of this run."""
    if request.step_id is None or request.run_id is None:
        return None
    # Accepted for the workflow's timeout: never before the workflow's deadline.
    token = tokens.make(
        CallbackClaim(request.workflow_id, request.step_id, request.run_id, request.attempt),
        lifetime=request.workflow_timeout or MAX_LIFETIME,
    )
    return f"{public_url}/v1/callbacks/{token}"


class Deliverer:
    """Sends requests and reports what came of them: ``send`` always answers a report,
    whatever the target did (or did not) answer.

    Requests are signed with ``signer`` (the global secrets), or, given ``signers``,
    with the secrets of the workflow's namespace where it has its own.
    """

    def __init__(
        self,
        *,
        signer: Signer,
        policy: NetPolicy,
        callback_url: Callable[[OutboundRequest], str | None],
        max_connections: int,
        transport: httpx.AsyncBaseTransport | None = None,
        signers: NamespaceSigners | None = None,
    ) -> None:
        self._signer = signer
        self._signers = signers
        self._policy = policy
        #: URLs that passed the static SSRF check under this (fixed) policy. The
        #: transport checks every request again, and what each name resolves to.
        self._checked: OrderedDict[str, None] = OrderedDict()
        self._callback_url = callback_url
        self._client = httpx.AsyncClient(
            transport=transport or make_transport(policy, limit=max_connections),
            follow_redirects=False,
            timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT),
            headers={"User-Agent": USER_AGENT},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def build_request(
        self, request: OutboundRequest, *, now: datetime | None = None, signer: Signer | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body for a request, signed with every secret of ``signer`` (by default
        the global secrets)."""
        now = now or datetime.now(UTC)
        callback_url = self._callback_url(request) if request.kind is DeliveryKind.STEP else None
        return build_request(
            request, now=now, signer=signer or self._signer, callback_url=callback_url
        )

    async def send(self, request: OutboundRequest) -> Report:
        """Send one request and classify the answer (DESIGN §4)."""
        started = datetime.now(UTC)
        clock = time.perf_counter()
        if request.expired:
            result = AttemptResult.failure(
                StepErrorCode.TIMEOUT, f"no callback within {request.timeout:g} s", retryable=True
            )
        else:
            try:
                result = await self._attempt(request, started)
            except Exception as exc:
                # Building or signing the request failed (its namespace's secrets could
                # not be read, say): a failed attempt like any other, retried by policy.
                log.exception("could not send %s %s", request.kind, request.url)
                result = classify_connection_error(f"the request could not be sent: {exc}")
        return Report(
            request=request,
            result=result,
            started_at=started,
            duration_ms=(time.perf_counter() - clock) * 1000,
        )

    async def _attempt(self, request: OutboundRequest, now: datetime) -> AttemptResult:
        if request.url not in self._checked:
            try:
                check_url_for_delivery(request.url, self._policy)
            except UnsafeURL as exc:
                # The URL itself is refused: trying again cannot help.
                return AttemptResult.failure(
                    StepErrorCode.CONNECTION_ERROR, str(exc), retryable=False
                )
            self._checked[request.url] = None
            if len(self._checked) > CHECKED_URLS:
                self._checked.popitem(last=False)
        signer = self._signer
        if self._signers is not None:
            signer = await self._signers.for_workflow(request.workflow_id)
        headers, body = self.build_request(request, now=now, signer=signer)
        try:
            async with asyncio.timeout(request.timeout):
                async with self._client.stream(
                    "POST", request.url, content=body, headers=headers
                ) as r:
                    data = await _read_capped(r, MAX_RESULT_BYTES + 1)
                    return classify_answer(
                        r.status_code,
                        data,
                        retry_after=r.headers.get("retry-after"),
                        content_type=r.headers.get("content-type"),
                        content_length=r.headers.get("content-length"),
                    )
        except TimeoutError:
            return classify_timeout(request.timeout)
        except httpx.TimeoutException:
            return classify_timeout(request.timeout)
        except MalformedAnswer as exc:
            return classify_malformed_answer(str(exc))
        except Exception as exc:
            # Whatever else went wrong on the way (a refused address, a reset, a bug in
            # a library), the attempt failed and is reported: a request that raised
            # instead would hold its step and its delivery slot for ever.
            return classify_connection_error(_describe(exc))


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    """Read at most ``limit`` bytes of the body: a huge answer must not exhaust memory."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    message = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in message:
        message = f"{message}: {cause}"
    return message[:500]
