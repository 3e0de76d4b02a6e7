"""Periodic sweeps (APScheduler): enforce workflow deadlines.

The scheduler holds no workflow state: every tick reads the database, so the
sweep is safe to run in every process at once (each expiry is a conditional
transition under the workflow's row lock).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from app.store import Store

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
    ) -> None:
        self.store = store
        self.wake = wake
        self.interval = interval
        self.retention_days = retention_days
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._busy = asyncio.Lock()

    def start(self) -> None:
        self._scheduler.add_job(
            self.expire_workflows,
            "interval",
            seconds=self.interval,
            id="expire-workflows",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        if self.retention_days is not None:
            self._scheduler.add_job(
                self.purge,
                "interval",
                seconds=PURGE_INTERVAL_SECONDS,
                id="purge-finished",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        self._scheduler.start()

    async def stop(self) -> None:
        # Pause first so no tick starts, then let a running tick finish: shutting the
        # scheduler down cancels running jobs, and a job cancelled inside a database
        # transaction can leak the SQLite connection lock.
        self._scheduler.pause()
        async with self._busy:
            self._scheduler.shutdown(wait=False)

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
