"""The resources of :class:`~baton.Client` (``client.workflows``, ``client.jobs``, …).

Each method is one API operation (built in :mod:`baton._calls`) or a loop over some:
``wait``, ``events(follow=True)``, ``list_all``. The ``Async…`` classes are the twins of
:class:`~baton.AsyncClient`: the same methods, to be awaited (iterators are async).
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar

import httpx
from httpx_sse import EventSource

from baton import _calls as calls
from baton._base import AsyncTransport, SyncTransport
from baton._streams import Follow, decode_event, finished, poll_interval, stream_timeout
from baton.documents import (
    CallbackAnswer,
    Dependencies,
    Document,
    Event,
    FlowControl,
    Graph,
    HeartbeatAnswer,
    Job,
    Page,
    Queue,
    Schedule,
    StepDetail,
    Workflow,
    WorkflowSummary,
)
from baton.errors import ProblemError, WaitTimeout

__all__ = [
    "AsyncCallbacks",
    "AsyncClaimedJob",
    "AsyncFlowControls",
    "AsyncJobs",
    "AsyncQueues",
    "AsyncSchedules",
    "AsyncWorkflows",
    "Callbacks",
    "ClaimedJob",
    "FlowControls",
    "Jobs",
    "Queues",
    "Schedules",
    "Workflows",
]

T = TypeVar("T")

#: Seconds ``wait()`` gives a workflow by default.
DEFAULT_WAIT = 60.0
#: The longest pause between two reads of ``wait()``.
DEFAULT_POLL_INTERVAL = 1.0


def _pages(fetch: Callable[[str | None], Page[T]]) -> Iterator[T]:
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield from page.items
        if page.next_cursor is None or not page.items:
            return
        cursor = page.next_cursor


async def _apages(fetch: Callable[[str | None], Any]) -> AsyncIterator[Any]:
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        for item in page.items:
            yield item
        if page.next_cursor is None or not page.items:
            return
        cursor = page.next_cursor


def _wait_expired(workflow_id: str, timeout: float, document: Workflow) -> WaitTimeout:
    return WaitTimeout(
        f"workflow {workflow_id!r} is still {document.get('status')!r} after {timeout:g} s",
        document,
    )


# --- sync -------------------------------------------------------------------------------


class _Resource:
    def __init__(self, transport: SyncTransport) -> None:
        self._transport = transport
        self._send = transport.send


class Workflows(_Resource):
    """Workflows (``/v1/workflows``)."""

    def create(self, body: Mapping[str, Any], *, idempotency_key: str | None = None) -> Workflow:
        """Create a workflow from a create body (DESIGN §3); the status document.

        Without an ``id`` in the body or an ``idempotency_key``, the client sends an
        ``Idempotency-Key`` of its own, so a create retried after a dropped connection
        never makes two workflows. An existing ``id`` with the same body answers the
        existing workflow; with another body, a 409 :class:`~baton.ProblemError`.
        """
        return self._send(calls.create_workflow(body, idempotency_key))

    def create_batch(self, bodies: Iterable[Mapping[str, Any]]) -> list[Workflow]:
        """Create up to 1,000 workflows in one transaction; their documents in order."""
        return self._send(calls.create_workflows(bodies))

    def get(self, workflow_id: str) -> Workflow:
        """The workflow's status document."""
        return self._send(calls.get_workflow(workflow_id))

    def list(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[WorkflowSummary]:
        """One page of workflow summaries, newest first; ``page.next_cursor`` for more."""
        return self._send(calls.list_workflows(status, name, limit, cursor))

    def list_all(
        self, *, status: str | None = None, name: str | None = None, limit: int | None = None
    ) -> Iterator[WorkflowSummary]:
        """Every matching summary, newest first, fetching pages of ``limit`` as needed."""
        return _pages(
            lambda cursor: self.list(status=status, name=name, limit=limit, cursor=cursor)
        )

    def step(self, workflow_id: str, step_id: str) -> StepDetail:
        """A step with its ``attemptLog``."""
        return self._send(calls.get_step(workflow_id, step_id))

    def dependencies(self, workflow_id: str, step_id: str) -> Dependencies:
        """A step's ``dependsOn`` and ``dependedOnBy``."""
        return self._send(calls.get_dependencies(workflow_id, step_id))

    def graph(self, workflow_id: str) -> Graph:
        """The whole DAG: ``nodes`` (steps, compensations, callbacks) and ``edges``."""
        return self._send(calls.get_graph(workflow_id))

    def cancel(self, workflow_id: str, *, compensate: bool = False) -> Workflow:
        """Cancel (compensating completed steps first when ``compensate``)."""
        return self._send(calls.cancel_workflow(workflow_id, compensate))

    def retry(self, workflow_id: str) -> Workflow:
        """Run a ``failed`` workflow again, or a ``compensation_failed`` one's compensation."""
        return self._send(calls.retry_workflow(workflow_id))

    def retry_step(self, workflow_id: str, step_id: str) -> Workflow:
        """Re-run a step and every step downstream of it."""
        return self._send(calls.retry_step(workflow_id, step_id))

    def events_page(
        self, workflow_id: str, *, after: int | str | None = None, limit: int | None = None
    ) -> Page[Event]:
        """One page of events after the event id ``after``; ``next_cursor`` is ``nextAfter``."""
        return self._send(calls.list_events(workflow_id, after, limit))

    def events(
        self,
        workflow_id: str,
        *,
        follow: bool = False,
        after: int | str | None = None,
        limit: int | None = None,
    ) -> Iterator[Event]:
        """The workflow's events, oldest first, after the event id ``after``.

        Without ``follow``: the events recorded so far (``limit`` per request). With
        ``follow``: a live stream that ends once the workflow is finished and nothing
        more is owed for it; a dropped connection is resumed from the last event
        received (``Last-Event-ID``).
        """
        if not follow:
            return _pages(
                lambda cursor: self.events_page(
                    workflow_id, after=after if cursor is None else cursor, limit=limit
                )
            )
        return self._follow(workflow_id, after)

    def _follow(self, workflow_id: str, after: int | str | None) -> Iterator[Event]:
        state = Follow(workflow_id, None if after is None else str(after))
        call = calls.stream_events(workflow_id)
        while True:
            error: BaseException | None = None
            try:
                arguments = self._transport.arguments(call, state.headers())
                arguments["timeout"] = stream_timeout(self._transport.timeout)
                with self._transport.http.stream(**arguments) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise ProblemError.from_response(response)
                    for message in EventSource(response).iter_sse():
                        event = decode_event(message)
                        if event is not None:
                            state.received(event)
                            yield event
                if finished(self.get(workflow_id).get("status")):
                    return
            except httpx.TransportError as exc:
                error = exc
            time.sleep(state.dropped(error))

    def wait(
        self,
        workflow_id: str,
        *,
        timeout: float | None = DEFAULT_WAIT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> Workflow:
        """Wait until the workflow is finished; its final status document.

        Reads the workflow every ``poll_interval`` seconds at most (sooner at first).
        ``timeout=None`` waits for as long as it takes.

        Raises:
            WaitTimeout: still not finished after ``timeout`` seconds (it carries the
                last document read).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause: float | None = None
        while True:
            document = self.get(workflow_id)
            if document.finished:
                return document
            pause = _next_pause(pause, poll_interval, deadline)
            if pause is None:
                raise _wait_expired(workflow_id, timeout or 0, document)
            time.sleep(pause)


def _next_pause(previous: float | None, ceiling: float, deadline: float | None) -> float | None:
    pause = poll_interval(previous, ceiling)
    if deadline is None:
        return pause
    left = deadline - time.monotonic()
    return None if left <= 0 else min(pause, left)


class Callbacks(_Resource):
    """Finishing async steps through their ``callbackUrl`` (no API key needed).

    ``callback`` is the ``callbackUrl`` of the step request, or just its token.
    """

    def complete(self, callback: str, result: Any = None) -> CallbackAnswer:
        """The async step succeeded with ``result``."""
        return self._send(calls.complete_callback(callback, result))

    def fail(self, callback: str, error: str, *, retry: bool = True) -> CallbackAnswer:
        """The async step's attempt failed (``retry=False``: for good)."""
        return self._send(calls.fail_callback(callback, error, retry))

    def heartbeat(self, callback: str) -> HeartbeatAnswer:
        """Push the async step's deadline out by its timeout."""
        return self._send(calls.heartbeat_callback(callback))


class ClaimedJob(Job):
    """A job this worker holds a lease on: finish it with ``complete`` or ``fail``."""

    __slots__ = ("_jobs",)
    _jobs: Jobs

    def complete(self, result: Any = None) -> Job:
        """The job succeeded with ``result``."""
        return self._jobs.complete(self["id"], self["leaseId"], result)

    def fail(self, reason: str, *, retry: bool = True, retry_after: float | None = None) -> Job:
        """The attempt failed; ``retry=False`` sends the job to the DLQ at once."""
        return self._jobs.fail(
            self["id"], self["leaseId"], reason, retry=retry, retry_after=retry_after
        )

    def heartbeat(self, visibility: float | None = None) -> Job:
        """Extend the lease by ``visibility`` seconds (default: the claim's)."""
        return self._jobs.heartbeat(self["id"], self["leaseId"], visibility=visibility)


class Jobs(_Resource):
    """Jobs of the pull queues (``/v1/jobs``, ``/v1/queues/{queue}/claim``)."""

    def enqueue(
        self,
        queue: str,
        payload: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        max_retries: int | None = None,
        scheduled_for: datetime | str | None = None,
        priority: int | None = None,
        visibility_timeout: float | None = None,
        flow_control: Mapping[str, Any] | None = None,
    ) -> Job:
        """Add a job to ``queue``; the job document (the existing one for a known key)."""
        body = calls.job_body(
            queue,
            payload,
            idempotency_key=idempotency_key,
            max_retries=max_retries,
            scheduled_for=scheduled_for,
            priority=priority,
            visibility_timeout=visibility_timeout,
            flow_control=flow_control,
        )
        return self._send(calls.enqueue_job(body))

    def enqueue_batch(
        self, jobs: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> list[Job]:
        """Add up to 1,000 jobs (``POST /v1/jobs`` bodies) in one transaction, in order."""
        return self._send(calls.enqueue_jobs(jobs, idempotency_key))

    def get(self, job_id: str) -> Job:
        """The job document, with its ``attemptLog``."""
        return self._send(calls.get_job(job_id))

    def list(
        self,
        *,
        queue: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Job]:
        """One page of jobs, newest first."""
        return self._send(calls.list_jobs(queue, status, limit, cursor))

    def list_all(
        self, *, queue: str | None = None, status: str | None = None, limit: int | None = None
    ) -> Iterator[Job]:
        """Every matching job, newest first."""
        return _pages(
            lambda cursor: self.list(queue=queue, status=status, limit=limit, cursor=cursor)
        )

    def retry(self, job_id: str) -> Job:
        """Put a ``dlq``, ``failed`` or ``cancelled`` job back to ``pending``."""
        return self._send(calls.retry_job(job_id))

    def cancel(self, job_id: str) -> Job:
        """Cancel a ``pending``, ``failed`` or ``claimed`` job."""
        return self._send(calls.cancel_job(job_id))

    def claim(
        self,
        queue: str,
        *,
        limit: int | None = None,
        visibility: float | None = None,
        wait: float | None = None,
        filter: Mapping[str, Any] | None = None,
        worker_id: str | None = None,
    ) -> builtins.list[ClaimedJob]:
        """Lease up to ``limit`` due jobs of ``queue``, waiting up to ``wait`` s for one.

        ``filter`` is the claim's filter (``{"priority": {"gte": 5}}``). Each job has
        a ``lease_id``; finish it with ``job.complete(...)`` or ``job.fail(...)`` before
        ``lease_expires_at`` (or extend it with ``job.heartbeat()``).
        """
        jobs = self._send(calls.claim_jobs(queue, limit, visibility, wait, filter, worker_id))
        claimed = []
        for job in jobs:
            held = ClaimedJob.wrap(job)
            held._jobs = self
            claimed.append(held)
        return claimed

    def complete(self, job_id: str, lease_id: str, result: Any = None) -> Job:
        """Complete a claimed job (409 ``lease_lost`` if the lease is no longer its own)."""
        return self._send(calls.complete_job(job_id, lease_id, result))

    def fail(
        self,
        job_id: str,
        lease_id: str,
        reason: str,
        *,
        retry: bool = True,
        retry_after: float | None = None,
    ) -> Job:
        """Fail a claimed job's attempt; retried unless ``retry`` is false or none are left."""
        return self._send(calls.fail_job(job_id, lease_id, reason, retry, retry_after))

    def heartbeat(self, job_id: str, lease_id: str, *, visibility: float | None = None) -> Job:
        """Extend a claimed job's lease."""
        return self._send(calls.heartbeat_job(job_id, lease_id, visibility))


class Queues(_Resource):
    """Queues (``/v1/queues``)."""

    def list(self) -> Page[Queue]:
        """Every queue of the namespace with its counts."""
        return self._send(calls.list_queues())

    def get(self, queue: str) -> Queue:
        """One queue with its counts."""
        return self._send(calls.get_queue(queue))

    def pause(self, queue: str) -> Queue:
        """Stop handing out the queue's jobs."""
        return self._send(calls.queue_action(queue, "pause"))

    def resume(self, queue: str) -> Queue:
        """Hand out the queue's jobs again."""
        return self._send(calls.queue_action(queue, "resume"))

    def replay_dlq(self, queue: str, *, limit: int | None = None) -> int:
        """Put up to ``limit`` dead-lettered jobs back to ``pending``; how many."""
        return self._send(calls.replay_dlq(queue, limit))

    def purge_dlq(self, queue: str) -> int:
        """Delete the queue's dead-lettered jobs; how many."""
        return self._send(calls.purge_dlq(queue))


class Schedules(_Resource):
    """Schedules: recurring workflows (``/v1/schedules``)."""

    def put(self, schedule_id: str, body: Mapping[str, Any]) -> Schedule:
        """Create or replace a schedule (``cron`` or ``every``, ``workflow``, …)."""
        return self._send(calls.put_schedule(schedule_id, body))

    def get(self, schedule_id: str) -> Schedule:
        """A schedule with ``nextRunAt``, ``lastRunAt``, ``firedCount``, ``recentRuns``."""
        return self._send(calls.get_schedule(schedule_id))

    def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Schedule]:
        """The namespace's schedules."""
        return self._send(calls.list_schedules(limit, cursor))

    def delete(self, schedule_id: str) -> None:
        """Delete a schedule (its workflows stay)."""
        self._send(calls.delete_schedule(schedule_id))

    def pause(self, schedule_id: str) -> Schedule:
        """Stop firing."""
        return self._send(calls.schedule_action(schedule_id, "pause"))

    def resume(self, schedule_id: str) -> Schedule:
        """Fire again."""
        return self._send(calls.schedule_action(schedule_id, "resume"))

    def trigger(self, schedule_id: str) -> Document:
        """Fire now, once; the server's answer."""
        return self._send(calls.trigger_schedule(schedule_id))


class FlowControls(_Resource):
    """Flow-control keys (``/v1/flow-control``)."""

    def set(
        self,
        key: str,
        *,
        parallelism: int | None = None,
        rate: int | None = None,
        period: float | None = None,
    ) -> FlowControl:
        """Set the key's limits, overriding those in bodies."""
        return self._send(calls.put_flow_control(key, parallelism, rate, period))

    def get(self, key: str) -> FlowControl:
        """The key's limits, in flight, waiting and ``heldUntil``."""
        return self._send(calls.get_flow_control(key))

    def list(self) -> Page[FlowControl]:
        """Every key with limits set or work in flight."""
        return self._send(calls.list_flow_control())

    def delete(self, key: str) -> None:
        """Remove the key's limits."""
        self._send(calls.delete_flow_control(key))


# --- async ------------------------------------------------------------------------------


class _AsyncResource:
    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport
        self._send = transport.send


class AsyncWorkflows(_AsyncResource):
    """The async twin of :class:`Workflows`."""

    async def create(
        self, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Workflow:
        return await self._send(calls.create_workflow(body, idempotency_key))

    async def create_batch(self, bodies: Iterable[Mapping[str, Any]]) -> list[Workflow]:
        return await self._send(calls.create_workflows(bodies))

    async def get(self, workflow_id: str) -> Workflow:
        return await self._send(calls.get_workflow(workflow_id))

    async def list(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[WorkflowSummary]:
        return await self._send(calls.list_workflows(status, name, limit, cursor))

    def list_all(
        self, *, status: str | None = None, name: str | None = None, limit: int | None = None
    ) -> AsyncIterator[WorkflowSummary]:
        return _apages(
            lambda cursor: self.list(status=status, name=name, limit=limit, cursor=cursor)
        )

    async def step(self, workflow_id: str, step_id: str) -> StepDetail:
        return await self._send(calls.get_step(workflow_id, step_id))

    async def dependencies(self, workflow_id: str, step_id: str) -> Dependencies:
        return await self._send(calls.get_dependencies(workflow_id, step_id))

    async def graph(self, workflow_id: str) -> Graph:
        return await self._send(calls.get_graph(workflow_id))

    async def cancel(self, workflow_id: str, *, compensate: bool = False) -> Workflow:
        return await self._send(calls.cancel_workflow(workflow_id, compensate))

    async def retry(self, workflow_id: str) -> Workflow:
        return await self._send(calls.retry_workflow(workflow_id))

    async def retry_step(self, workflow_id: str, step_id: str) -> Workflow:
        return await self._send(calls.retry_step(workflow_id, step_id))

    async def events_page(
        self, workflow_id: str, *, after: int | str | None = None, limit: int | None = None
    ) -> Page[Event]:
        return await self._send(calls.list_events(workflow_id, after, limit))

    def events(
        self,
        workflow_id: str,
        *,
        follow: bool = False,
        after: int | str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Event]:
        if not follow:
            return _apages(
                lambda cursor: self.events_page(
                    workflow_id, after=after if cursor is None else cursor, limit=limit
                )
            )
        return self._follow(workflow_id, after)

    async def _follow(self, workflow_id: str, after: int | str | None) -> AsyncIterator[Event]:
        state = Follow(workflow_id, None if after is None else str(after))
        call = calls.stream_events(workflow_id)
        while True:
            error: BaseException | None = None
            try:
                arguments = self._transport.arguments(call, state.headers())
                arguments["timeout"] = stream_timeout(self._transport.timeout)
                async with self._transport.http.stream(**arguments) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise ProblemError.from_response(response)
                    messages = EventSource(response).aiter_sse()
                    async for message in messages:
                        event = decode_event(message)
                        if event is not None:
                            state.received(event)
                            yield event
                if finished((await self.get(workflow_id)).get("status")):
                    return
            except httpx.TransportError as exc:
                error = exc
            await asyncio.sleep(state.dropped(error))

    async def wait(
        self,
        workflow_id: str,
        *,
        timeout: float | None = DEFAULT_WAIT,  # noqa: ASYNC109 (the sync twin's signature)
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> Workflow:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause: float | None = None
        while True:
            document = await self.get(workflow_id)
            if document.finished:
                return document
            pause = _next_pause(pause, poll_interval, deadline)
            if pause is None:
                raise _wait_expired(workflow_id, timeout or 0, document)
            await asyncio.sleep(pause)


class AsyncCallbacks(_AsyncResource):
    """The async twin of :class:`Callbacks`."""

    async def complete(self, callback: str, result: Any = None) -> CallbackAnswer:
        return await self._send(calls.complete_callback(callback, result))

    async def fail(self, callback: str, error: str, *, retry: bool = True) -> CallbackAnswer:
        return await self._send(calls.fail_callback(callback, error, retry))

    async def heartbeat(self, callback: str) -> HeartbeatAnswer:
        return await self._send(calls.heartbeat_callback(callback))


class AsyncClaimedJob(Job):
    """The async twin of :class:`ClaimedJob`."""

    __slots__ = ("_jobs",)
    _jobs: AsyncJobs

    async def complete(self, result: Any = None) -> Job:
        return await self._jobs.complete(self["id"], self["leaseId"], result)

    async def fail(
        self, reason: str, *, retry: bool = True, retry_after: float | None = None
    ) -> Job:
        return await self._jobs.fail(
            self["id"], self["leaseId"], reason, retry=retry, retry_after=retry_after
        )

    async def heartbeat(self, visibility: float | None = None) -> Job:
        return await self._jobs.heartbeat(self["id"], self["leaseId"], visibility=visibility)


class AsyncJobs(_AsyncResource):
    """The async twin of :class:`Jobs`."""

    async def enqueue(
        self,
        queue: str,
        payload: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        max_retries: int | None = None,
        scheduled_for: datetime | str | None = None,
        priority: int | None = None,
        visibility_timeout: float | None = None,
        flow_control: Mapping[str, Any] | None = None,
    ) -> Job:
        body = calls.job_body(
            queue,
            payload,
            idempotency_key=idempotency_key,
            max_retries=max_retries,
            scheduled_for=scheduled_for,
            priority=priority,
            visibility_timeout=visibility_timeout,
            flow_control=flow_control,
        )
        return await self._send(calls.enqueue_job(body))

    async def enqueue_batch(
        self, jobs: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> list[Job]:
        return await self._send(calls.enqueue_jobs(jobs, idempotency_key))

    async def get(self, job_id: str) -> Job:
        return await self._send(calls.get_job(job_id))

    async def list(
        self,
        *,
        queue: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Job]:
        return await self._send(calls.list_jobs(queue, status, limit, cursor))

    def list_all(
        self, *, queue: str | None = None, status: str | None = None, limit: int | None = None
    ) -> AsyncIterator[Job]:
        return _apages(
            lambda cursor: self.list(queue=queue, status=status, limit=limit, cursor=cursor)
        )

    async def retry(self, job_id: str) -> Job:
        return await self._send(calls.retry_job(job_id))

    async def cancel(self, job_id: str) -> Job:
        return await self._send(calls.cancel_job(job_id))

    async def claim(
        self,
        queue: str,
        *,
        limit: int | None = None,
        visibility: float | None = None,
        wait: float | None = None,
        filter: Mapping[str, Any] | None = None,
        worker_id: str | None = None,
    ) -> builtins.list[AsyncClaimedJob]:
        jobs = await self._send(calls.claim_jobs(queue, limit, visibility, wait, filter, worker_id))
        claimed = []
        for job in jobs:
            held = AsyncClaimedJob.wrap(job)
            held._jobs = self
            claimed.append(held)
        return claimed

    async def complete(self, job_id: str, lease_id: str, result: Any = None) -> Job:
        return await self._send(calls.complete_job(job_id, lease_id, result))

    async def fail(
        self,
        job_id: str,
        lease_id: str,
        reason: str,
        *,
        retry: bool = True,
        retry_after: float | None = None,
    ) -> Job:
        return await self._send(calls.fail_job(job_id, lease_id, reason, retry, retry_after))

    async def heartbeat(
        self, job_id: str, lease_id: str, *, visibility: float | None = None
    ) -> Job:
        return await self._send(calls.heartbeat_job(job_id, lease_id, visibility))


class AsyncQueues(_AsyncResource):
    """The async twin of :class:`Queues`."""

    async def list(self) -> Page[Queue]:
        return await self._send(calls.list_queues())

    async def get(self, queue: str) -> Queue:
        return await self._send(calls.get_queue(queue))

    async def pause(self, queue: str) -> Queue:
        return await self._send(calls.queue_action(queue, "pause"))

    async def resume(self, queue: str) -> Queue:
        return await self._send(calls.queue_action(queue, "resume"))

    async def replay_dlq(self, queue: str, *, limit: int | None = None) -> int:
        return await self._send(calls.replay_dlq(queue, limit))

    async def purge_dlq(self, queue: str) -> int:
        return await self._send(calls.purge_dlq(queue))


class AsyncSchedules(_AsyncResource):
    """The async twin of :class:`Schedules`."""

    async def put(self, schedule_id: str, body: Mapping[str, Any]) -> Schedule:
        return await self._send(calls.put_schedule(schedule_id, body))

    async def get(self, schedule_id: str) -> Schedule:
        return await self._send(calls.get_schedule(schedule_id))

    async def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Schedule]:
        return await self._send(calls.list_schedules(limit, cursor))

    async def delete(self, schedule_id: str) -> None:
        await self._send(calls.delete_schedule(schedule_id))

    async def pause(self, schedule_id: str) -> Schedule:
        return await self._send(calls.schedule_action(schedule_id, "pause"))

    async def resume(self, schedule_id: str) -> Schedule:
        return await self._send(calls.schedule_action(schedule_id, "resume"))

    async def trigger(self, schedule_id: str) -> Document:
        return await self._send(calls.trigger_schedule(schedule_id))


class AsyncFlowControls(_AsyncResource):
    """The async twin of :class:`FlowControls`."""

    async def set(
        self,
        key: str,
        *,
        parallelism: int | None = None,
        rate: int | None = None,
        period: float | None = None,
    ) -> FlowControl:
        return await self._send(calls.put_flow_control(key, parallelism, rate, period))

    async def get(self, key: str) -> FlowControl:
        return await self._send(calls.get_flow_control(key))

    async def list(self) -> Page[FlowControl]:
        return await self._send(calls.list_flow_control())

    async def delete(self, key: str) -> None:
        await self._send(calls.delete_flow_control(key))
