"""Outgoing requests: build the signed request for a job, send it, classify the answer.

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
    classify_timeout,
)
from app.netguard import NetPolicy, UnsafeURL, check_url_for_delivery, make_transport
from app.store import Job, Report, iso
from app.tenants import NamespaceSigners, public_id
from app.tokens import MAX_LIFETIME, CallbackClaim, CallbackTokens
from baton.signing import Signer

log = logging.getLogger("baton.delivery")

USER_AGENT = f"Baton/{__version__}"
#: Connecting gets at most this long, whatever the step's timeout.
CONNECT_TIMEOUT = 10.0
#: Step URLs remembered as having passed the static SSRF check.
CHECKED_URLS = 10_000


def build_body(job: Job, *, deadline: datetime, callback_url: str | None) -> dict[str, Any]:
    """The JSON body of DESIGN §4 for a job."""
    if job.payload is not None:
        return job.payload
    body: dict[str, Any] = {
        "workflowId": public_id(job.workflow_id),
        "workflowName": job.workflow_name,
        "stepId": job.step_id,
        "attempt": job.attempt,
        "kind": job.kind.value,
        "context": job.context,
        "previousSteps": job.previous_steps or {},
        "deadline": iso(deadline),
        "callbackUrl": callback_url,
    }
    if job.compensating is not None:
        body["compensating"] = job.compensating
    return body


def build_request(
    job: Job, *, now: datetime, signer: Signer, callback_url: str | None
) -> tuple[dict[str, str], bytes]:
    """The headers and body of a job's request sent at ``now`` (also how the console
    shows the request an attempt sent, from the attempt's start time)."""
    deadline = now + timedelta(seconds=job.timeout)
    body = orjson.dumps(build_body(job, deadline=deadline, callback_url=callback_url))
    headers = signer.headers(job.message_id, int(now.timestamp()), body)
    headers.update(
        {
            "Content-Type": "application/json",
            "Baton-Workflow-Id": public_id(job.workflow_id),
            "Baton-Attempt": str(job.attempt),
            "Baton-Kind": job.kind.value,
        }
    )
    if job.step_id is not None:
        headers["Baton-Step-Id"] = job.step_id
    return headers, body


def step_callback_url(tokens: CallbackTokens, public_url: str, job: Job) -> str | None:
    """The ``callbackUrl`` of a step request: a token bound to this attempt of this run."""
    if job.step_id is None or job.run_id is None:
        return None
    # Accepted for the workflow's timeout: never before the workflow's deadline.
    token = tokens.make(
        CallbackClaim(job.workflow_id, job.step_id, job.run_id, job.attempt),
        lifetime=job.workflow_timeout or MAX_LIFETIME,
    )
    return f"{public_url}/v1/callbacks/{token}"


class Deliverer:
    """Sends jobs and reports what came of them; never raises for a failed request.

    Requests are signed with ``signer`` (the global secrets), or, given ``signers``,
    with the secrets of the workflow's namespace where it has its own.
    """

    def __init__(
        self,
        *,
        signer: Signer,
        policy: NetPolicy,
        callback_url: Callable[[Job], str | None],
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
        self, job: Job, *, now: datetime | None = None, signer: Signer | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body for a job, signed with every secret of ``signer`` (by default
        the global secrets)."""
        now = now or datetime.now(UTC)
        callback_url = self._callback_url(job) if job.kind is DeliveryKind.STEP else None
        return build_request(job, now=now, signer=signer or self._signer, callback_url=callback_url)

    async def send(self, job: Job) -> Report:
        """Send one job and classify the answer (DESIGN §4)."""
        started = datetime.now(UTC)
        clock = time.perf_counter()
        if job.expired:
            result = AttemptResult.failure(
                StepErrorCode.TIMEOUT, f"no callback within {job.timeout:g} s", retryable=True
            )
        else:
            result = await self._attempt(job, started)
        return Report(
            job=job,
            result=result,
            started_at=started,
            duration_ms=(time.perf_counter() - clock) * 1000,
        )

    async def _attempt(self, job: Job, now: datetime) -> AttemptResult:
        if job.url not in self._checked:
            try:
                check_url_for_delivery(job.url, self._policy)
            except UnsafeURL as exc:
                # The URL itself is refused: trying again cannot help.
                return AttemptResult.failure(
                    StepErrorCode.CONNECTION_ERROR, str(exc), retryable=False
                )
            self._checked[job.url] = None
            if len(self._checked) > CHECKED_URLS:
                self._checked.popitem(last=False)
        signer = self._signer
        if self._signers is not None:
            signer = await self._signers.for_workflow(job.workflow_id)
        headers, body = self.build_request(job, now=now, signer=signer)
        try:
            async with asyncio.timeout(job.timeout):
                async with self._client.stream("POST", job.url, content=body, headers=headers) as r:
                    data = await _read_capped(r, MAX_RESULT_BYTES + 1)
                    return classify_answer(
                        r.status_code,
                        data,
                        retry_after=r.headers.get("retry-after"),
                    )
        except TimeoutError:
            return classify_timeout(job.timeout)
        except httpx.TimeoutException:
            return classify_timeout(job.timeout)
        except httpx.HTTPError as exc:
            return classify_connection_error(_describe(exc))
        except OSError as exc:
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
