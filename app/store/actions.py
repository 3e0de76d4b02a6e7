"""Actions on workflows: cancel, retry, retry a step; delayed starts, timeouts, purging.

An action is a session like any settle: the workflow is locked, loaded whole,
the machine acts (or refuses: 409), and its effects are written.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from tortoise.transactions import in_transaction

from app.engine import TERMINAL_WORKFLOW_STATUSES, WorkflowStatus
from app.errors import Conflict, NotFound
from app.machine import ActionRefused, Machine
from app.models import Workflow
from app.store.reading import load_status_document
from app.store.rows import utcnow
from app.store.session import StoreCore
from app.store.sql import Where, column, fetch, retry_transaction, supports_for_update
from app.tenants import public_id


class Actions(StoreCore):
    """Cancel, retry, retry a step, expire, purge."""

    async def cancel(self, workflow_id: str, *, compensate: bool) -> dict[str, Any]:
        """Cancel a workflow (DESIGN §3); raises NotFound or Conflict."""
        return await self._act(workflow_id, lambda m: m.cancel(compensate=compensate))

    async def retry(self, workflow_id: str) -> dict[str, Any]:
        """Re-run a failed workflow, or resume a failed compensation."""
        return await self._act(workflow_id, lambda m: m.retry_workflow())

    async def retry_step(self, workflow_id: str, step_id: str) -> dict[str, Any]:
        """Re-run one step and everything downstream of it."""

        def act(machine: Machine) -> None:
            if step_id not in machine.steps:
                raise NotFound(f"workflow '{public_id(workflow_id)}' has no step '{step_id}'")
            machine.retry_step(step_id)

        return await self._act(workflow_id, act)

    async def _act(self, workflow_id: str, action: Any) -> dict[str, Any]:
        await retry_transaction(lambda: self._act_once(workflow_id, action))
        document = await load_status_document(workflow_id)
        assert document is not None
        return document

    async def _act_once(self, workflow_id: str, action: Any) -> None:
        async with in_transaction():
            session = await self._session(workflow_id, None)
            if session is None:
                raise NotFound(f"no workflow '{public_id(workflow_id)}'")
            try:
                action(session.machine)
                await self._run(session.machine, session.loaded, session.finished)
            except ActionRefused as exc:
                # Nothing was written: the transaction rolls back with the 409.
                raise Conflict(str(exc)) from exc

    async def start_due_workflows(self, *, now: datetime | None = None, limit: int = 100) -> int:
        """Start ``pending`` workflows whose delayed start has come (the periodic sweep);
        answers how many started.

        Each is a session under the workflow's lock: one cancelled (or started by
        another process) meanwhile is no longer ``pending`` and is left alone.
        """
        now = now or utcnow()
        ids = await (
            Workflow.filter(status=WorkflowStatus.PENDING, start_at__lte=now, end_reason=None)
            .order_by("start_at")
            .limit(limit)
            .values_list("id", flat=True)
        )
        started = 0
        for workflow_id in ids:
            started += await retry_transaction(partial(self._begin, str(workflow_id)))
        return started

    async def _begin(self, workflow_id: str) -> int:
        async with in_transaction():
            session = await self._session(workflow_id, None)
            if session is None or not session.machine.begin():
                return 0
            await self._run(session.machine, session.loaded, session.finished)
            return 1

    async def next_start_at(self) -> datetime | None:
        """When the next delayed start falls due, if any workflow waits for one."""
        value = (
            await Workflow.filter(status=WorkflowStatus.PENDING, end_reason=None)
            .exclude(start_at=None)
            .order_by("start_at")
            .first()
            .values_list("start_at", flat=True)
        )
        return value if isinstance(value, datetime) else None

    async def expire_workflows(self, *, now: datetime | None = None, limit: int = 100) -> int:
        """Fail running workflows whose deadline passed (the periodic sweep)."""
        now = now or utcnow()
        ids = await (
            Workflow.filter(status=WorkflowStatus.RUNNING, deadline_at__lte=now, end_reason=None)
            .limit(limit)
            .values_list("id", flat=True)
        )
        for workflow_id in ids:
            async with in_transaction():
                session = await self._session(str(workflow_id), None)
                if session is None:
                    continue
                session.machine.timeout()
                await self._run(session.machine, session.loaded, session.finished)
        return len(ids)

    async def purge_finished(self, *, before: datetime, limit: int = 500) -> int:
        """Delete up to ``limit`` finished workflows that ended before ``before``.

        Steps, deliveries, attempts and events go with them (foreign keys cascade). A
        workflow that still owes a callback is kept until the callback is settled.
        The workflows are locked first (skipping any another transaction holds: a
        retry re-opening one, say) and deleted only if they are still finished.
        """
        async with in_transaction():
            terminal = [str(status) for status in TERMINAL_WORKFLOW_STATUSES]
            where = (
                Where(Workflow)
                .isin("status", terminal)
                .lt("completed_at", before)
                .raw(
                    'NOT EXISTS (SELECT 1 FROM "deliveries" AS d'
                    ' WHERE d."workflow_id" = "workflows"."id")'
                )
            )
            suffix = f" ORDER BY {column(Workflow, 'completed_at')} LIMIT {int(limit)}"
            if supports_for_update():
                suffix += " FOR UPDATE SKIP LOCKED"
            doomed = [row.id for row in await fetch(Workflow, ("id",), where, suffix)]
            if not doomed:
                return 0
            # Still finished, under the lock (the driver's row count includes cascaded
            # rows on some databases: the ids are counted instead).
            await Workflow.filter(id__in=doomed, status__in=terminal).delete()
        return len(doomed)
