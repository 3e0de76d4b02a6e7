"""The dispatcher: claims due deliveries, sends them, settles what came back.

Three tasks per process:

- the claim loop takes due rows from the database (never from memory) up to
  ``BATON_MAX_CONCURRENCY`` in flight, and sleeps until woken, until the next
  due time, or for at most ``POLL_INTERVAL`` (work of other processes, expired
  leases);
- the committer settles finished attempts in batches: many answers, one
  transaction (group commit), then wakes the claim loop when the batch made
  new work due — a dependent step is sent within milliseconds;
- the lease keeper renews the leases of requests still in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence

from app.delivery import Deliverer
from app.engine import Outcome
from app.metrics import Metrics
from app.store import OutboundRequest, Report, Store
from app.store.sql import database_unavailable

log = logging.getLogger("baton.dispatcher")

#: Longest sleep between looks at the database when nothing wakes us.
POLL_INTERVAL = 1.0
#: Most rows claimed in one transaction.
CLAIM_BATCH = 200
#: Most answers settled in one transaction.
SETTLE_BATCH = 200
#: First and longest pause before recording answers again while the database is unavailable.
UNAVAILABLE_PAUSE = 0.25
UNAVAILABLE_PAUSE_MAX = 5.0


class Dispatcher:
    def __init__(
        self,
        store: Store,
        deliverer: Deliverer,
        *,
        max_concurrency: int,
        lease_seconds: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.deliverer = deliverer
        self.max_concurrency = max_concurrency
        self.lease_seconds = lease_seconds
        self._wake = asyncio.Event()
        #: Finished attempts waiting to be settled; None tells the committer to stop.
        self._reports: asyncio.Queue[Report | None] = asyncio.Queue()
        #: delivery id -> task, for requests claimed and not yet settled.
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        # Its own generator: jitter never draws from (or disturbs) the global one.
        self._rand = random.Random().random
        #: Slots promised to a claim or settle transaction under way.
        self._reserved = 0
        #: The last claim was cut short by the free slots: more may be due already.
        self._backlog = False

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="baton-claim"),
            asyncio.create_task(self._commit_loop(), name="baton-commit"),
            asyncio.create_task(self._lease_loop(), name="baton-lease"),
        ]

    def stop_claiming(self) -> None:
        """Claim nothing more; requests in flight go on until ``stop``."""
        self._stopping = True
        self._wake.set()

    def wake(self) -> None:
        """New work may be due now: look at the database without waiting for the poll."""
        self._wake.set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def reserve(self, limit: int | None = None) -> int:
        """Reserve free delivery slots (at most ``limit``) for a transaction that may
        hand off requests."""
        slots = 0 if self._stopping else max(0, self._free_slots())
        if limit is not None:
            slots = min(slots, limit)
        self._reserved += slots
        return slots

    def release(self, slots: int, requests: Sequence[OutboundRequest] = ()) -> None:
        """Return reserved slots, and send at once the requests handed off in them."""
        self._reserved -= slots
        for request in requests:
            self._spawn(request)

    def _free_slots(self) -> int:
        return self.max_concurrency - len(self._inflight) - self._reserved

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let requests in flight finish for up to ``grace`` seconds,
        settle what finished, and release the leases of the rest.

        The loops that open database transactions are asked to stop, never cancelled:
        a cancellation that lands while Tortoise's SQLite transaction is beginning
        leaks its connection lock, and every later query would wait forever.
        """
        if not self._tasks:
            return
        claim, commit, lease = self._tasks
        self._stopping = True
        self._wake.set()
        await asyncio.wait([claim], timeout=grace)
        pending = [t for t in self._inflight.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        for task in self._inflight.values():
            # Only HTTP is awaited in a send task: cancelling it is safe.
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        # The committer settles everything that finished, then stops at the sentinel.
        self._reports.put_nowait(None)
        await asyncio.wait([commit], timeout=grace)
        lease.cancel()
        for task in (claim, commit, lease):
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        unfinished = list(self._inflight)
        if unfinished:
            try:
                await self.store.release_leases(unfinished)
            except Exception:
                log.exception(
                    "could not release %d leases; they expire on their own", len(unfinished)
                )
        self._inflight.clear()

    # ----------------------------------------------------------------- claim

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            free = self._free_slots()
            claimed = 0
            self._backlog = free <= 0
            if free > 0:
                wanted = min(free, CLAIM_BATCH)
                self._reserved += wanted
                try:
                    requests = await self.store.claim_due(wanted, lease_seconds=self.lease_seconds)
                except Exception as exc:
                    if database_unavailable(exc):
                        log.warning("the database is unavailable (%s); claiming again soon", exc)
                    else:
                        log.exception("claiming due deliveries failed; retrying")
                    requests = []
                    await asyncio.sleep(POLL_INTERVAL)
                finally:
                    self._reserved -= wanted
                for request in requests:
                    self._spawn(request)
                claimed = len(requests)
                if claimed and claimed == min(free, CLAIM_BATCH):
                    self._backlog = True
                    continue  # there may be more due right now
            await self._sleep(free > 0 and claimed == 0)

    async def _sleep(self, idle: bool) -> None:
        timeout = POLL_INTERVAL
        if idle:
            with contextlib.suppress(Exception):
                due = await self.store.next_due_at()
                if due is not None:
                    timeout = min(POLL_INTERVAL, max(0.0, due - time.time()))
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _spawn(self, request: OutboundRequest) -> None:
        if request.takeover and self.metrics is not None:
            self.metrics.takeovers.inc()
        if request.takeover:
            log.info(
                "sending %s %s/%s attempt %d again: its earlier claim expired or was released",
                request.kind,
                request.workflow_id,
                request.step_id,
                request.attempt,
            )
        task = asyncio.create_task(self._run(request), name=f"baton-send-{request.delivery_id}")
        self._inflight[request.delivery_id] = task

    async def _run(self, request: OutboundRequest) -> None:
        try:
            report = await self.deliverer.send(request)
        except Exception:
            # Deliverer.send reports every failure; should it ever raise, the slot is
            # freed and the lease no longer renewed: it runs out and the request is
            # claimed and sent again. Say loudly that this happened.
            log.exception(
                "sending %s %s/%s failed unexpectedly",
                request.kind,
                request.workflow_id,
                request.step_id,
            )
            self._inflight.pop(request.delivery_id, None)
            self._wake.set()
            return
        if self.metrics is not None:
            self._observe(report)
        await self._reports.put(report)

    def _observe(self, report: Report) -> None:
        assert self.metrics is not None
        request = report.request
        kind = request.kind.value
        self.metrics.attempts.labels(kind=kind, outcome=report.result.outcome.value).inc()
        if request.expired:
            return
        self.metrics.delivery_seconds.labels(kind=kind).observe(report.duration_ms / 1000)
        if not request.takeover and request.due_at:
            delay = report.started_at.timestamp() - request.due_at
            self.metrics.scheduling_seconds.observe(max(0.0, delay))

    # ----------------------------------------------------------------- settle

    async def _commit_loop(self) -> None:
        stop = False
        #: Answers the database could not record yet: settled first at the next round.
        held: list[Report] = []
        pause = UNAVAILABLE_PAUSE
        while not stop:
            batch = held
            if not batch:
                first = await self._reports.get()
                if first is None:
                    stop = True
                else:
                    batch.append(first)
            while len(batch) < SETTLE_BATCH and not self._reports.empty():
                item = self._reports.get_nowait()
                if item is None:
                    stop = True
                else:
                    batch.append(item)
            held = await self._settle(batch) if batch else []
            if held and not stop:
                await asyncio.sleep(pause)
                pause = min(pause * 2, UNAVAILABLE_PAUSE_MAX)
            else:
                pause = UNAVAILABLE_PAUSE

    async def _settle(self, batch: list[Report]) -> list[Report]:
        """Settle a batch; answers the reports to try again (the database was unavailable)."""
        # Steps this batch makes due may be claimed and sent at once, within the slots
        # that are free; they are reserved so the claim loop cannot take them too.
        handoff = self.reserve()
        try:
            summary = await self.store.settle(
                batch, rand=self._rand, handoff=handoff, lease_seconds=self.lease_seconds
            )
        except Exception as exc:
            if database_unavailable(exc) and not self._stopping:
                # Nothing can be recorded now (another process holds SQLite's write
                # lock, PostgreSQL is unreachable): keep the answers and try again,
                # rather than have their leases run out and the requests sent again.
                log.warning(
                    "the database is unavailable (%s); %d answers wait to be recorded",
                    exc,
                    len(batch),
                )
                self.release(handoff)
                return batch
            log.exception("settling %d answers failed; settling them one by one", len(batch))
            for report in batch:
                try:
                    await self.store.settle([report], rand=self._rand)
                except Exception:
                    # Its lease runs out and another claim sends it again (at-least-once).
                    log.exception(
                        "could not record the answer for %s/%s",
                        report.request.workflow_id,
                        report.request.step_id,
                    )
            summary = None
        self.release(handoff, summary.requests if summary is not None else ())
        for report in batch:
            self._inflight.pop(report.request.delivery_id, None)
        # Look at the database again when this batch left work due that it did not hand
        # off, when an earlier claim found more due than there were free slots (slots
        # are free now), or when an answer may have scheduled a retry or an async
        # deadline (the claim loop's sleep must not outlast it).
        if (
            summary is None
            or summary.due_now
            or (self._backlog and not self._stopping)
            or any(r.result.outcome is not Outcome.COMPLETED for r in batch)
        ):
            self._wake.set()
        return []

    # ----------------------------------------------------------------- leases

    async def _lease_loop(self) -> None:
        interval = max(0.2, self.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            if not self._inflight:
                continue
            try:
                await self.store.renew_leases(
                    list(self._inflight), lease_seconds=self.lease_seconds
                )
            except Exception:
                log.exception("renewing leases failed")
