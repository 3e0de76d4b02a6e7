"""Claiming: due deliveries taken under a lease, described as requests to send.

Work is claimed, never remembered: what Baton owes anyone is a row in
``deliveries`` with a due time. A process claims due rows under a lease
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent claimers skip each
other's rows), renews the lease while the request is in flight, and gives it up
on shutdown; a row whose lease ran out is claimed again by whoever comes next,
with the same webhook-id.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from app.engine import (
    CALLBACK_KINDS,
    CALLBACK_RETRY_POLICY,
    CALLBACK_TIMEOUT,
    DeliveryKind,
    StepStatus,
    WorkflowStatus,
    previous_steps,
)
from app.machine import CompensationStatus
from app.models import Delivery, Step, Workflow
from app.store.rows import STEP_STATE_COLUMNS, WORKFLOW_STATE_COLUMNS, step_request, step_state
from app.store.session import Ancestry, StoreCore, Tx
from app.store.sql import Where, fetch, update_many
from app.store.work import OutboundRequest


class Claiming(StoreCore):
    """Claiming due deliveries and keeping their leases."""

    async def claim_due(
        self, limit: int, *, lease_seconds: float, now: float | None = None
    ) -> list[OutboundRequest]:
        """Claim up to ``limit`` due deliveries under a lease and describe them as requests.

        A row is due when its time has come and nobody holds a live lease on it; a
        row whose lease ran out (its process died) is claimed again with the same
        webhook-id. On PostgreSQL concurrent claimers skip each other's locked rows.
        """
        if limit <= 0:
            return []
        now = time.time() if now is None else now
        async with in_transaction() as conn:
            query = (
                Delivery.filter(due_at__lte=now)
                .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
                .order_by("due_at")
                .limit(limit)
            )
            if conn.capabilities.support_for_update:
                query = query.select_for_update(skip_locked=True)
            rows = await query
            if not rows:
                return []
            ids = [r.id for r in rows]
            await Delivery.filter(id__in=ids).update(
                lease_owner=self.owner, lease_until=now + lease_seconds, claimed=True
            )
            tx = Tx()
            requests = await self._describe(rows, tx)
            await self._flush(tx)
            # A step of a workflow whose deadline has passed is not sent: the workflow
            # times out here rather than at the next sweep.
            if tx.expired:
                # Those rows were leased a moment ago by this very claim: not in flight.
                await Delivery.filter(id__in=tx.skipped).update(
                    lease_owner=None, lease_until=None, claimed=False
                )
            for workflow_id in tx.expired:
                session = await self._session(workflow_id, None)
                if session is not None:
                    session.machine.timeout()
                    await self._run(session.machine, session.loaded, session.finished)
        return requests

    async def _describe(self, rows: Sequence[Delivery], tx: Tx) -> list[OutboundRequest]:
        workflow_ids = {r.workflow_id for r in rows}  # type: ignore[attr-defined]
        workflows = {
            w.id: w
            for w in await fetch(
                Workflow, WORKFLOW_STATE_COLUMNS, Where(Workflow).isin("id", workflow_ids)
            )
        }
        by_workflow: dict[str, list[str]] = {}
        for r in rows:
            if r.step_id:
                by_workflow.setdefault(r.workflow_id, []).append(r.step_id)  # type: ignore[attr-defined]
        step_rows: dict[tuple[str, str], SimpleNamespace] = {}
        ancestry: dict[tuple[str, str], list[str]] = {}
        states: dict[str, dict[str, dict[str, Any]]] = {}
        if by_workflow:
            for s in await fetch(
                Step, STEP_STATE_COLUMNS, Where(Step).groups("workflow_id", "step_id", by_workflow)
            ):
                step_rows[(s.workflow_id, s.step_id)] = s
            found = await self._ancestry(
                [
                    Ancestry(w, ids, None, workflows[w].previous_steps, workflows[w].reopened)
                    for w, ids in by_workflow.items()
                ]
            )
            for owner_id, (lines, known) in found.items():
                states[owner_id] = known
                ancestry.update({(owner_id, sid): line for sid, line in lines.items()})
        sending: list[Delivery] = []
        starts: list[tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]] = []
        for row in rows:
            wf_id: str = row.workflow_id  # type: ignore[attr-defined]
            workflow = workflows[wf_id]
            kind = DeliveryKind(row.kind)
            if (
                kind is DeliveryKind.STEP
                and workflow.status == WorkflowStatus.RUNNING
                and workflow.end_reason is None
                and workflow.deadline_at is not None
                and workflow.deadline_at <= tx.now
            ):
                tx.expired.add(wf_id)
                tx.skipped.append(row.id)
                continue
            sending.append(row)
            if row.claimed or kind in CALLBACK_KINDS:
                continue
            step = step_rows[(wf_id, row.step_id or "")]
            where: Mapping[str, Any] = {"workflow_id": wf_id, "step_id": step.step_id}
            if kind is DeliveryKind.STEP and not row.awaiting:
                if step.status in (StepStatus.RUNNING, StepStatus.RETRYING):
                    starts.append(
                        (
                            where,
                            {"status": step.status},
                            {"status": StepStatus.RUNNING, "attempts": row.attempt},
                        )
                    )
            elif kind is DeliveryKind.COMPENSATION:
                starts.append((where, {}, {"compensation_status": CompensationStatus.RUNNING}))
        # Attempts start: one statement for the batch; a step whose status moved on
        # meanwhile is not matched, and gets no step.started event.
        started = set(await update_many(Step, starts, partial=True)) if starts else set()
        for where, _, changes in starts:
            started_key = (where["workflow_id"], where["step_id"])
            if "attempts" in changes and started_key in started:
                step_rows[started_key].attempts = changes["attempts"]
                tx.event(
                    started_key[0], "step.started", started_key[1], attempt=changes["attempts"]
                )
        requests: list[OutboundRequest] = []
        for row in sending:
            wf_id = row.workflow_id  # type: ignore[attr-defined]
            workflow = workflows[wf_id]
            kind = DeliveryKind(row.kind)
            takeover = row.claimed
            if kind in CALLBACK_KINDS:
                requests.append(
                    OutboundRequest(
                        delivery_id=row.id,
                        workflow_id=wf_id,
                        workflow_name=workflow.name,
                        kind=kind,
                        step_id=None,
                        attempt=row.attempt,
                        message_id=row.message_id,
                        url=row.url,
                        timeout=CALLBACK_TIMEOUT,
                        policy=CALLBACK_RETRY_POLICY,
                        payload=row.payload,
                        takeover=takeover,
                        due_at=row.due_at,
                    )
                )
                continue
            key = (wf_id, row.step_id or "")
            step = step_rows[key]
            requests.append(
                step_request(
                    row.id,
                    workflow,
                    step_state(step, None),
                    kind=kind,
                    attempt=row.attempt,
                    message_id=row.message_id,
                    url=row.url,
                    previous=previous_steps(ancestry[key], states[wf_id]),
                    due_at=row.due_at,
                    expired=row.awaiting,
                    takeover=takeover and not row.awaiting,
                )
            )
        return requests

    async def renew_leases(self, delivery_ids: Iterable[int], *, lease_seconds: float) -> int:
        """Push out this process's leases on deliveries still in flight."""
        ids = list(delivery_ids)
        if not ids:
            return 0
        return await Delivery.filter(id__in=ids, lease_owner=self.owner).update(
            lease_until=time.time() + lease_seconds
        )

    async def release_leases(self, delivery_ids: Iterable[int]) -> int:
        """Give up leases (shutdown): the rows become due again at once for anyone."""
        ids = list(delivery_ids)
        if not ids:
            return 0
        return await Delivery.filter(id__in=ids, lease_owner=self.owner).update(
            lease_owner=None, lease_until=None
        )

    async def next_due_at(self) -> float | None:
        """When the next delivery falls due (an unleased row, or a lease running out)."""
        row = (
            await Delivery.filter(lease_until__isnull=True)
            .order_by("due_at")
            .first()
            .values_list("due_at", flat=True)
        )
        leased = (
            await Delivery.filter(lease_until__isnull=False)
            .order_by("lease_until")
            .first()
            .values_list("lease_until", flat=True)
        )
        candidates = [float(v) for v in (row, leased) if v is not None]  # type: ignore[arg-type]
        return min(candidates) if candidates else None
