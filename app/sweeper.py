"""Periodic sweeps (APScheduler): liveness, delayed starts, schedules, deadlines, purging.

The scheduler holds no workflow or schedule state: every tick reads the database,
so the sweep is safe to run in every process at once (each expiry or start is a
conditional transition under the workflow's row lock; each schedule tick fires once,
as ``app.store.schedules`` explains).

Timekeeping — starting delayed workflows and firing schedules — runs every
``SWEEP_INTERVAL_SECONDS`` and, in between, at the next due time it knows of: after
each pass it asks the database when the next start or tick falls due and sets a
one-off APScheduler job for then (``due_at``), so a one-second schedule fires on
time rather than up to a sweep late. Creates and schedule changes in this process
call ``due_at`` too; another process's are seen at the next regular tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from app.store import Store
from app.store.liveness import DEAD_AFTER, LIVENESS_INTERVAL

log = logging.getLogger("baton.sweeper")

#: How often deadlines are checked: a workflow fails at most this long after its timeout.
SWEEP_INTERVAL_SECONDS = 1.0
#: How often finished workflows past BATON_RETENTION_DAYS are deleted (in batches).
PURGE_INTERVAL_SECONDS = 60.0


class Sweeper:
    def __init__(
        self,
        store: Store,
        *,
        wake: Callable[[], None],
        interval: float = SWEEP_INTERVAL_SECONDS,
        retention_days: float | None = None,
        shared: bool = False,
    ) -> None:
        self.store = store
        #: Several processes may share the database (PostgreSQL): watch their liveness.
        self.shared = shared
        self.wake = wake
        self.interval = interval
        self.retention_days = retention_days
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._busy = asyncio.Lock()
        self._liveness = asyncio.Lock()
        self._timing = asyncio.Lock()
        #: The one-off timekeeping wake-up planned, if any (``due_at``).
        self._soonest: datetime | None = None

    def start(self) -> None:
        self._every(LIVENESS_INTERVAL, self.keep_alive, "liveness")
        self._every(self.interval, self.keep_time, "keep-time")
        self._every(self.interval, self.expire_workflows, "expire-workflows")
        if self.retention_days is not None:
            self._every(PURGE_INTERVAL_SECONDS, self.purge, "purge-finished")
        self._scheduler.start()

    def _every(self, seconds: float, job: Callable[[], Awaitable[None]], name: str) -> None:
        """Run ``job`` every ``seconds``; a tick is skipped while the last one runs."""
        self._scheduler.add_job(
            job,
            "interval",
            seconds=seconds,
            id=name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )

    async def stop(self) -> None:
        # Pause first so no tick starts, then let a running tick finish: shutting the
        # scheduler down cancels running jobs, and a job cancelled inside a database
        # transaction can leak the SQLite connection lock.
        self._scheduler.pause()
        async with self._busy, self._liveness, self._timing:
            self._scheduler.shutdown(wait=False)

    def due_at(self, when: datetime | None) -> None:
        """Run timekeeping at ``when`` (a delayed start or a schedule's tick), unless a
        regular tick or a wake-up planned already comes first."""
        if when is None or not self._scheduler.running:
            return
        now = datetime.now(UTC)
        if when >= now + timedelta(seconds=self.interval):
            return
        if self._soonest is not None and now <= self._soonest <= when:
            return
        self._soonest = max(when, now)
        self._scheduler.add_job(
            partial(self.keep_time, planned=self._soonest),
            "date",
            run_date=self._soonest,
            id="keep-time-soon",
            replace_existing=True,
            misfire_grace_time=None,
        )

    async def keep_time(self, planned: datetime | None = None) -> None:
        """Start the delayed workflows whose time came, fire the schedules whose tick
        came, then plan the next wake-up."""
        if planned is not None and planned == self._soonest:
            self._soonest = None
        async with self._timing:
            try:
                started = await self.store.start_due_workflows()
                fired = await self.store.fire_due_schedules()
                upcoming = [
                    t
                    for t in (
                        await self.store.next_start_at(),
                        await self.store.next_schedule_fire_at(),
                    )
                    if t is not None
                ]
            except Exception:
                log.exception("timekeeping failed; trying again at the next tick")
                return
        if started:
            log.info("%d delayed workflow(s) started", started)
        if fired.outcomes:
            log.info(
                "schedule ticks: %s",
                ", ".join(f"{n} {outcome}" for outcome, n in sorted(fired.outcomes.items())),
            )
        if started or fired.made_due:
            self.wake()
        if upcoming:
            self.due_at(min(upcoming))

    async def keep_alive(self) -> None:
        """Renew this process's liveness row; on PostgreSQL, take back the leases of
        processes that stopped renewing theirs."""
        async with self._liveness:
            try:
                await self.store.announce()
                if self.shared:
                    taken = await self.store.take_back_from_the_dead()
                    if taken:
                        log.warning(
                            "took back %d deliveries from server processes that stopped "
                            "renewing their liveness (dead for over %g s)",
                            taken,
                            DEAD_AFTER,
                        )
                        self.wake()
            except Exception as exc:
                log.warning("renewing liveness failed (%s); trying again", exc)

    async def expire_workflows(self) -> None:
        async with self._busy:
            await self._expire()

    async def _expire(self) -> None:
        try:
            expired = await self.store.expire_workflows()
        except Exception:
            log.exception("expiring workflows failed; trying again at the next tick")
            return
        if expired:
            log.info("%d workflow(s) reached their timeout", expired)
            self.wake()

    async def purge(self) -> None:
        """Delete finished workflows older than the retention period, a batch at a time."""
        assert self.retention_days is not None
        before = datetime.now(UTC) - timedelta(days=self.retention_days)
        async with self._busy:
            try:
                total = 0
                while deleted := await self.store.purge_finished(before=before):
                    total += deleted
            except Exception:
                log.exception("purging finished workflows failed; trying again later")
                return
        if total:
            log.info(
                "deleted %d finished workflow(s) older than %g days", total, self.retention_days
            )
