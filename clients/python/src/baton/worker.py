"""``Worker``: pull a queue's jobs and run a handler on each, as many at once as allowed.

::

    from baton import Client, Fatal, Retry, Worker

    def resize(job):
        if job.payload.get("url") is None:
            raise Fatal("no url")                  # to the dead-letter queue at once
        if thumbnails.busy():
            raise Retry("busy", after=30)          # try again in 30 s
        return {"thumbnail": thumbnails.make(job.payload["url"])}   # completes the job

    Worker(Client(), "images", resize, concurrency=4).run()

The loop (Spooled's and Hatchet's): long-poll ``claim`` for as many jobs as there are
free slots; run each (a plain handler in a thread of the worker's own pool, an ``async``
one as a task); while it runs, heartbeat its lease every third of the visibility
timeout; then ``complete`` it with the handler's return value, or ``fail`` it:

==============================  ============================================
the handler                     the job
==============================  ============================================
returns ``value``               ``complete(result=value)``
raises ``Retry(reason, after)``  ``fail(reason, retry=True, retryAfter=after)``
raises ``Fatal(reason)``        ``fail(reason, retry=False)``: the DLQ
raises anything else            ``fail("Class: message")``, retried by policy
==============================  ============================================

SIGTERM or SIGINT (or :meth:`Worker.stop`) stops it gracefully: no new claim, the jobs
it holds (including those of a claim in flight) run to the end and are reported, then
:meth:`Worker.run` returns (a script calling it exits 0). Logs go to the
``baton.worker`` logger, each record with ``extra`` fields (``event``, ``queue``,
``job_id``, ``attempt``, ``duration``) for structured formatters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from baton.client import AsyncClient, Client
from baton.documents import Job
from baton.errors import BatonError, ProblemError
from baton.handlers import is_async_callable

__all__ = ["Fatal", "Retry", "Worker"]

logger = logging.getLogger("baton.worker")

T = TypeVar("T")

#: Seconds one claim waits for a job (the server's long poll allows 0–20).
DEFAULT_WAIT = 10.0
#: The lease assumed when neither the worker nor the job says (DESIGN §7's default).
DEFAULT_VISIBILITY = 30.0
#: Pauses after a failed claim: from the first, doubling, up to the last.
CLAIM_BACKOFF = (1.0, 30.0)

Handler = Callable[[Any], Any]


class Retry(Exception):
    """Raise from a handler: this attempt failed; try again (after ``after`` seconds)."""

    def __init__(self, reason: str = "retry requested", *, after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after = after


class Fatal(Exception):
    """Raise from a handler: the job cannot succeed; fail it for good (to the DLQ)."""

    def __init__(self, reason: str = "fatal error") -> None:
        super().__init__(reason)
        self.reason = reason


def outcome_of(error: BaseException | None) -> tuple[str, bool, float | None]:
    """``(reason, retry, retry_after)`` for a handler that raised ``error``."""
    if isinstance(error, Retry):
        return error.reason, True, error.after
    if isinstance(error, Fatal):
        return error.reason, False, None
    message = str(error)
    name = type(error).__name__
    return (f"{name}: {message}" if message else name), True, None


def lease_seconds(job: Mapping[str, Any], visibility: float | None) -> float:
    """How long a claim of ``job`` lasts: the worker's ``visibility``, else the job's."""
    if visibility:
        return float(visibility)
    own = job.get("visibilityTimeout")
    if isinstance(own, int | float) and own > 0:
        return float(own)
    expires, claimed = job.get("leaseExpiresAt"), job.get("claimedAt")
    if isinstance(expires, str):
        start = datetime.fromisoformat(claimed) if isinstance(claimed, str) else datetime.now(UTC)
        seconds = (datetime.fromisoformat(expires) - start).total_seconds()
        if seconds > 0:
            return seconds
    return DEFAULT_VISIBILITY


class Worker:
    """Runs ``handler(job)`` on the jobs of ``queue``, ``concurrency`` at a time.

    ``client`` is a :class:`~baton.Client` or an :class:`~baton.AsyncClient`.
    ``handler`` is a plain or ``async`` function taking the claimed job (a
    :class:`~baton.documents.Job`: ``job.payload``, ``job.workflow``, ``job.attempt``,
    …) and returning its result. ``visibility`` is the lease asked for at each claim
    (default: each job's ``visibilityTimeout``); ``wait`` the long poll of each claim;
    ``filter`` the claim's filter; ``worker_id`` is recorded on each attempt (default:
    host and process id).
    """

    def __init__(
        self,
        client: Client | AsyncClient,
        queue: str,
        handler: Handler,
        concurrency: int = 1,
        *,
        visibility: float | None = None,
        wait: float = DEFAULT_WAIT,
        filter: Mapping[str, Any] | None = None,
        worker_id: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.client = client
        self.queue = queue
        self.handler = handler
        self.concurrency = concurrency
        self.visibility = visibility
        self.wait = wait
        self.filter = dict(filter) if filter is not None else None
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self._is_async_handler = is_async_callable(handler)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        # Handlers get a pool of their own, so that blocked handlers never hold up
        # the heartbeats and completions (which run in the other pool, for a sync client).
        self._handler_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._api_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.held: set[str] = set()

    def __repr__(self) -> str:
        return f"<Worker queue={self.queue!r} concurrency={self.concurrency}>"

    # --- running and stopping ----------------------------------------------------------

    def run(self) -> None:
        """Work until stopped by SIGTERM, SIGINT or :meth:`stop`; blocks.

        Signal handlers are installed when called from the main thread.
        """
        asyncio.run(
            self.arun(install_signal_handlers=threading.current_thread() is threading.main_thread())
        )

    async def arun(self, *, install_signal_handlers: bool = False) -> None:
        """Work until stopped, in the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_requested.is_set():
            self._stopping.set()
        self._handler_pool = concurrent.futures.ThreadPoolExecutor(
            self.concurrency, thread_name_prefix=f"baton-worker-{self.queue}"
        )
        self._api_pool = concurrent.futures.ThreadPoolExecutor(
            2 * self.concurrency + 1, thread_name_prefix=f"baton-worker-{self.queue}-api"
        )
        signals = (signal.SIGTERM, signal.SIGINT) if install_signal_handlers else ()
        for number in signals:
            self._loop.add_signal_handler(number, self._on_signal, number)
        self._log(
            logging.INFO,
            "started",
            "worker %s started on queue %r (concurrency %d)",
            self.worker_id,
            self.queue,
            self.concurrency,
        )
        try:
            await self._claim_loop()
        finally:
            for number in signals:
                self._loop.remove_signal_handler(number)
            self._handler_pool.shutdown(wait=True)
            self._api_pool.shutdown(wait=True)
            self._log(logging.INFO, "stopped", "worker %s stopped", self.worker_id)

    def stop(self) -> None:
        """Stop claiming and return from :meth:`run` once held jobs are done (thread-safe)."""
        self._stop_requested.set()
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self._loop.call_soon_threadsafe(self._stopping.set)

    def _on_signal(self, number: int) -> None:
        name = signal.Signals(number).name
        self._log(
            logging.INFO,
            "stopping",
            "%s: worker stops claiming and finishes the %d job(s) it holds",
            name,
            len(self.held),
        )
        self.stop()

    # --- the loop ----------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        assert self._stopping is not None
        active: set[asyncio.Task[None]] = set()
        failures = 0
        while not self._stopping.is_set():
            if len(active) >= self.concurrency:
                await self._until_one_done(active)
                continue
            try:
                jobs = await self._api(
                    self.client.jobs.claim,
                    self.queue,
                    limit=self.concurrency - len(active),
                    visibility=self.visibility,
                    wait=self.wait,
                    filter=self.filter,
                    worker_id=self.worker_id,
                )
            except BatonError as exc:
                failures += 1
                pause = min(CLAIM_BACKOFF[1], CLAIM_BACKOFF[0] * 2 ** (failures - 1))
                self._log(
                    logging.WARNING,
                    "claim_failed",
                    "claim from %r failed (%s); next in %g s",
                    self.queue,
                    exc,
                    pause,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)
                continue
            failures = 0
            for job in jobs:
                task = asyncio.create_task(self._process(job))
                active.add(task)
                task.add_done_callback(active.discard)
        if active:
            await asyncio.gather(*active)

    async def _until_one_done(self, active: set[asyncio.Task[None]]) -> None:
        assert self._stopping is not None
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({*active, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()

    async def _process(self, job: Any) -> None:
        job_id, attempt = job["id"], job.get("attempt")
        lease = lease_seconds(job, self.visibility)
        self.held.add(job_id)
        started = time.monotonic()
        self._log(
            logging.INFO, "job_started", "job %s started (attempt %s)", job_id, attempt, job=job
        )
        beat = asyncio.create_task(self._heartbeat(job, lease))
        error: BaseException | None = None
        result: Any = None
        try:
            result = await self._run_handler(job)
        except Exception as exc:
            error = exc
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        duration = round(time.monotonic() - started, 3)
        try:
            if error is None:
                await self._api(self.client.jobs.complete, job_id, job["leaseId"], result)
                self._log(
                    logging.INFO,
                    "job_completed",
                    "job %s completed in %.3f s",
                    job_id,
                    duration,
                    job=job,
                    duration=duration,
                )
            else:
                reason, retry, after = outcome_of(error)
                await self._api(
                    self.client.jobs.fail,
                    job_id,
                    job["leaseId"],
                    reason,
                    retry=retry,
                    retry_after=after,
                )
                level = logging.WARNING if isinstance(error, Retry | Fatal) else logging.ERROR
                self._log(
                    level,
                    "job_failed",
                    "job %s failed in %.3f s: %s (retry: %s)",
                    job_id,
                    duration,
                    reason,
                    retry,
                    job=job,
                    duration=duration,
                    exc_info=None if isinstance(error, Retry | Fatal) else error,
                )
        except BatonError as exc:
            # The lease runs out on its own and the server counts the attempt as failed.
            self._log(
                logging.ERROR,
                "report_failed",
                "job %s: could not report its outcome: %s",
                job_id,
                exc,
                job=job,
            )
        finally:
            self.held.discard(job_id)

    async def _run_handler(self, job: Any) -> Any:
        if self._is_async_handler:
            return await self.handler(job)
        assert self._loop is not None
        result = await self._loop.run_in_executor(self._handler_pool, self.handler, job)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _heartbeat(self, job: Any, lease: float) -> None:
        period = lease / 3
        while True:
            await asyncio.sleep(period)
            try:
                await self._api(
                    self.client.jobs.heartbeat, job["id"], job["leaseId"], visibility=lease
                )
                self._log(
                    logging.DEBUG,
                    "heartbeat",
                    "job %s: lease extended by %g s",
                    job["id"],
                    lease,
                    job=job,
                )
            except ProblemError as exc:
                self._log(
                    logging.WARNING,
                    "lease_lost",
                    "job %s: heartbeat refused: %s",
                    job["id"],
                    exc,
                    job=job,
                )
                if exc.status == 409:
                    return
            except BatonError as exc:
                self._log(
                    logging.WARNING,
                    "heartbeat_failed",
                    "job %s: heartbeat failed: %s",
                    job["id"],
                    exc,
                    job=job,
                )

    async def _api(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a client method: awaited for an async client, in the API pool for a sync one."""
        if isinstance(self.client, AsyncClient):
            answer: Awaitable[Any] = method(*args, **kwargs)
            return await answer
        assert self._loop is not None
        return await self._loop.run_in_executor(
            self._api_pool, functools.partial(method, *args, **kwargs)
        )

    def _log(
        self,
        level: int,
        event: str,
        message: str,
        *args: Any,
        job: Job | Mapping[str, Any] | None = None,
        duration: float | None = None,
        exc_info: BaseException | None = None,
    ) -> None:
        extra: dict[str, Any] = {
            "event": f"worker.{event}",
            "queue": self.queue,
            "worker_id": self.worker_id,
        }
        if job is not None:
            extra["job_id"] = job.get("id")
            extra["attempt"] = job.get("attempt")
        if duration is not None:
            extra["duration"] = duration
        logger.log(level, message, *args, extra=extra, exc_info=exc_info)
