"""Settling: recording what came of requests, and every transition that follows.

Answers arrive in batches (the dispatcher's group commit): one transaction
locks the workflows of the batch, runs one machine session per workflow, and
writes the effects of all of them together. An async step's callback and
heartbeat are settled here too: a callback is an answer that came late, by
another road.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tortoise.transactions import in_transaction

from app.engine import (
    CALLBACK_KINDS,
    AttemptDecision,
    AttemptResult,
    DeliveryKind,
    StepStatus,
    classify_answer,
    decide_after_attempt,
    iso,
)
from app.errors import Conflict, Gone, NotFound
from app.models import Attempt, Delivery, Event, Step
from app.store.rows import Row, attempt_row, utcnow
from app.store.session import Session, StoreCore, Writes, log_event
from app.store.sql import Where, fetch, insert_many, retry_transaction
from app.store.work import Handoff, OutboundRequest, Report, SettleSummary
from app.tokens import CallbackClaim


class Settling(StoreCore):
    """Settling answers, async callbacks and heartbeats."""

    async def settle(
        self,
        reports: Sequence[Report],
        *,
        rand: Any = None,
        handoff: int = 0,
        lease_seconds: float = 30.0,
    ) -> SettleSummary:
        """Record a batch of attempt outcomes and every transition they cause, in one commit."""
        summary = SettleSummary()
        if not reports:
            return summary
        # Lock workflows in one order everywhere, so two processes settling batches
        # that share workflows cannot deadlock.
        ordered = sorted(reports, key=lambda r: (r.request.workflow_id, r.request.delivery_id))

        async def transaction() -> list[dict[str, Any]]:
            budget.reset()
            writes = Writes()
            created: list[dict[str, Any]] = []
            async with in_transaction():
                ids = [r.request.delivery_id for r in ordered]
                deliveries = {
                    d.id: d
                    for d in await fetch(
                        Delivery,
                        ("id", "workflow_id", "step_id", "attempt"),
                        Where(Delivery).isin("id", ids),
                    )
                }
                by_workflow: dict[str, list[tuple[Report, Row]]] = {}
                for report in ordered:
                    request = report.request
                    # The delivery must still be ours, for this attempt: a process whose
                    # lease ran out may answer after another took the row over.
                    delivery = deliveries.get(request.delivery_id)
                    if delivery is None or delivery.attempt != request.attempt:
                        continue
                    if request.kind in CALLBACK_KINDS:
                        await self._settle_callback(request, report.result, delivery, rand)
                    else:
                        by_workflow.setdefault(request.workflow_id, []).append((report, delivery))
                if by_workflow:
                    created = await self._settle_workflows(by_workflow, rand, budget, writes)
                await self._write(writes)
                await insert_many(Attempt, [attempt_row(r) for r in ordered])
            return created

        budget = Handoff(handoff, lease_seconds)
        created = await retry_transaction(transaction)
        now = time.time()
        summary.requests = budget.requests
        summary.due_now = sum(1 for d in created if d["due_at"] <= now and d["lease_owner"] is None)
        return summary

    async def _settle_workflows(
        self,
        items: Mapping[str, list[tuple[Report, Row]]],
        rand: Any,
        budget: Handoff,
        writes: Writes,
    ) -> list[dict[str, Any]]:
        """Every answer in the batch, one machine session per workflow.

        The answered steps are loaded with their direct dependents (known from the
        cached graph), which is all a completion usually touches, for every workflow
        of the batch at once.
        """
        wanted: dict[str, set[str]] = {}
        for workflow_id, answers in items.items():
            dependents = (await self.graphs.get(workflow_id)).dependents
            mine = wanted.setdefault(workflow_id, set())
            for report, _ in answers:
                step_id = report.request.step_id or ""
                mine.add(step_id)
                mine.update(dependents.get(step_id, ()))
        sessions = await self._sessions(wanted)
        for workflow_id, answers in items.items():
            session = sessions.get(workflow_id)
            if session is None:  # the workflow was purged
                writes.finished.extend(d.id for _, d in answers)
                continue
            machine = session.machine
            for report, delivery in answers:
                request = report.request
                assert request.step_id is not None
                if request.kind is DeliveryKind.STEP:
                    decision = machine.attempt_finished(
                        request.step_id, request.attempt, report.result, rand=rand
                    )
                else:
                    decision = machine.compensation_finished(
                        request.step_id, request.attempt, report.result, rand=rand
                    )
                await self._after_decision(delivery, decision, session)
        return await self._run_all(list(sessions.values()), budget, writes)

    async def _after_decision(
        self, delivery: Row, decision: AttemptDecision | None, session: Session
    ) -> None:
        """Keep, reschedule, park (async) or remove the delivery row the answer was for."""
        if decision is None or decision.status in (StepStatus.COMPLETED, StepStatus.FAILED):
            session.finished.append(delivery.id)
        elif decision.status is StepStatus.RETRYING:
            await self._reschedule(delivery, decision.retry_in or 0.0)
        else:
            step = session.machine.steps[delivery.step_id or ""]
            if step.status is StepStatus.RUNNING:
                # Async: the step waits for its callback until the deadline in due_at.
                await Delivery.filter(id=delivery.id).update(
                    awaiting=True,
                    due_at=time.time() + step.timeout,
                    lease_owner=None,
                    lease_until=None,
                )
            else:
                session.finished.append(delivery.id)

    async def _settle_callback(
        self, request: OutboundRequest, result: AttemptResult, delivery: Row, rand: Any
    ) -> None:
        decision = decide_after_attempt(result, request.attempt, request.policy, rand=rand)
        if decision.status is StepStatus.RETRYING:
            await self._reschedule(delivery, decision.retry_in or 0.0)
            return
        await Delivery.filter(id=delivery.id).delete()
        type_ = "callback.failed" if decision.status is StepStatus.FAILED else "callback.delivered"
        data: dict[str, Any] = {"kind": request.kind.value, "attempt": request.attempt}
        if decision.status is StepStatus.FAILED:
            data["error"] = decision.error.to_dict() if decision.error else None
        self.event_tally[type_] += 1
        log_event(request.workflow_id, type_, None, data)
        await Event.create(
            workflow_id=request.workflow_id, step_id=None, type=type_, at=utcnow(), data=data
        )

    async def _reschedule(self, delivery: Row, retry_in: float) -> None:
        await Delivery.filter(id=delivery.id).update(
            attempt=delivery.attempt + 1,
            due_at=time.time() + retry_in,
            started=False,
            awaiting=False,
            lease_owner=None,
            lease_until=None,
        )

    async def async_result(self, claim: CallbackClaim, body: bytes) -> dict[str, Any]:
        """An async step's callback: settle it like an answer to its request.

        Raises NotFound when the step does not exist, Gone when it is no longer
        waiting for this run (already answered, timed out, retried, cancelled).
        """
        async with in_transaction():
            # The workflow's lock first: of callbacks sent at once with one token, the
            # ones that wait here then find the step no longer waiting (single use).
            session = await self._session(claim.workflow_id, [claim.step_id])
            if session is None:
                raise NotFound("no such step")
            _, delivery = await self._waiting(claim)
            result = classify_answer(200, body)
            decision = session.machine.attempt_finished(claim.step_id, claim.attempt, result)
            await self._after_decision(delivery, decision, session)
            await self._run(session.machine, session.loaded, session.finished)
            await Attempt.create(
                workflow_id=claim.workflow_id,
                step_id=claim.step_id,
                kind=DeliveryKind.STEP,
                number=claim.attempt,
                message_id=delivery.message_id,
                started_at=utcnow(),
                duration_ms=0.0,
                http_status=None,
                outcome=f"callback.{result.outcome}",
                error=result.error.to_dict() if result.error else None,
                response_excerpt=result.excerpt,
            )
            status = session.machine.steps[claim.step_id].status
        return {"accepted": True, "stepId": claim.step_id, "status": status.value}

    async def heartbeat(self, claim: CallbackClaim) -> dict[str, Any]:
        """Push an async step's deadline out by its timeout."""
        async with in_transaction():
            step_row, delivery = await self._waiting(claim)
            if not delivery.awaiting:
                raise Conflict("the step's request is still in flight; heartbeat after its 202")
            due = time.time() + step_row.timeout
            await Delivery.filter(id=delivery.id).update(due_at=due)
        deadline = datetime.fromtimestamp(due, UTC)
        return {"stepId": claim.step_id, "deadline": iso(deadline)}

    async def _waiting(self, claim: CallbackClaim) -> tuple[Step, Delivery]:
        step = await Step.get_or_none(workflow_id=claim.workflow_id, step_id=claim.step_id)
        if step is None:
            raise NotFound("no such step")
        delivery = await Delivery.get_or_none(
            workflow_id=claim.workflow_id,
            step_id=claim.step_id,
            kind=DeliveryKind.STEP,
            attempt=claim.attempt,
        )
        if (
            delivery is None
            or step.status != StepStatus.RUNNING
            or step.run_id != claim.run_id
            or step.attempts != claim.attempt
        ):
            raise Gone("this callback is no longer accepted: the step is not waiting for it")
        return step, delivery
