"""Settling: recording what came of requests, and every transition that follows.

Answers arrive in batches (the dispatcher's group commit): one transaction
locks the workflows of the batch, runs one machine session per workflow, and
writes the effects of all of them together. An async step's callback and
heartbeat are settled here too: a callback is an answer that came late, by
another road.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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
from app.store.sql import Where, delete_many, fetch, insert_many, retry_transaction, update_many
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
                # Lock first, then read: the workflows of the batch (in id order), and
                # only then their delivery rows, so a row read here cannot be changed by
                # another settle, callback or action before this transaction ends.
                sessions = await self._sessions(await self._wanted(ordered))
                deliveries = {
                    d.id: d
                    for d in await fetch(
                        Delivery,
                        ("id", "workflow_id", "step_id", "attempt"),
                        Where(Delivery).isin("id", [r.request.delivery_id for r in ordered]),
                    )
                }
                answered: dict[str, Session] = {}
                for report in ordered:
                    request = report.request
                    # The delivery must still be ours, for this attempt: a process whose
                    # lease ran out may answer after another took the row over, and a
                    # callback may have rescheduled the row as the next attempt.
                    delivery = deliveries.get(request.delivery_id)
                    session = sessions.get(request.workflow_id)
                    if delivery is None or delivery.attempt != request.attempt:
                        continue
                    if request.kind in CALLBACK_KINDS:
                        await self._settle_callback(request, report.result, delivery, rand)
                    elif session is not None:
                        await self._settle_answer(report, delivery, session, rand)
                        answered[request.workflow_id] = session
                if answered:
                    created = await self._run_all(list(answered.values()), budget, writes)
                await self._write(writes)
                await insert_many(Attempt, [attempt_row(r) for r in ordered])
            return created

        budget = Handoff(handoff, lease_seconds)
        created = await retry_transaction(transaction)
        now = time.time()
        summary.requests = budget.requests
        summary.due_now = sum(1 for d in created if d["due_at"] <= now and d["lease_owner"] is None)
        return summary

    async def _wanted(self, reports: Sequence[Report]) -> dict[str, set[str]]:
        """The steps each workflow of the batch needs loaded: the answered steps and their
        direct dependents (known from the cached graph), which is all a completion
        usually touches. Callbacks need their workflow locked, no step."""
        wanted: dict[str, set[str]] = {}
        for report in reports:
            request = report.request
            mine = wanted.setdefault(request.workflow_id, set())
            if request.kind in CALLBACK_KINDS or request.step_id is None:
                continue
            dependents = (await self.graphs.get(request.workflow_id)).dependents
            mine.add(request.step_id)
            mine.update(dependents.get(request.step_id, ()))
        return wanted

    async def _settle_answer(
        self, report: Report, delivery: Row, session: Session, rand: Any
    ) -> None:
        request = report.request
        assert request.step_id is not None
        machine = session.machine
        if request.kind is DeliveryKind.STEP:
            decision = machine.attempt_finished(
                request.step_id, request.attempt, report.result, rand=rand
            )
        else:
            decision = machine.compensation_finished(
                request.step_id, request.attempt, report.result, rand=rand
            )
        await self._after_decision(delivery, decision, session)

    async def _after_decision(
        self, delivery: Row, decision: AttemptDecision | None, session: Session
    ) -> None:
        """Keep, reschedule, park (async) or remove the delivery row the answer was for."""
        if decision is None or decision.status in (StepStatus.COMPLETED, StepStatus.FAILED):
            session.finished.append((delivery.id, delivery.attempt))
        elif decision.status is StepStatus.RETRYING:
            await self._reschedule(delivery, decision.retry_in or 0.0)
        else:
            step = session.machine.steps[delivery.step_id or ""]
            if step.status is StepStatus.RUNNING:
                # Async: the step waits for its callback until the deadline in due_at.
                await _update_delivery(
                    delivery,
                    awaiting=True,
                    due_at=time.time() + step.timeout,
                    lease_owner=None,
                    lease_until=None,
                )
            else:
                session.finished.append((delivery.id, delivery.attempt))

    async def _settle_callback(
        self, request: OutboundRequest, result: AttemptResult, delivery: Row, rand: Any
    ) -> None:
        decision = decide_after_attempt(result, request.attempt, request.policy, rand=rand)
        if decision.status is StepStatus.RETRYING:
            await self._reschedule(delivery, decision.retry_in or 0.0)
            return
        await delete_many(Delivery, [({"id": delivery.id}, {"attempt": delivery.attempt})])
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
        await _update_delivery(
            delivery,
            attempt=delivery.attempt + 1,
            due_at=time.time() + retry_in,
            claimed=False,
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
        """Push an async step's deadline out by its timeout.

        Raises NotFound, Gone when the step no longer waits for this run or its
        deadline has passed (the timeout is being recorded), Conflict while the step's
        request is still in flight.
        """
        due = await retry_transaction(lambda: self._heartbeat_once(claim))
        return {"stepId": claim.step_id, "deadline": iso(datetime.fromtimestamp(due, UTC))}

    async def _heartbeat_once(self, claim: CallbackClaim) -> float:
        async with in_transaction():
            if await self._session(claim.workflow_id, [claim.step_id]) is None:
                raise NotFound("no such step")
            step_row, delivery = await self._waiting(claim)
            if not delivery.awaiting:
                raise Conflict("the step's request is still in flight; heartbeat after its 202")
            now = time.time()
            if delivery.lease_owner is not None or delivery.due_at <= now:
                raise Gone("the step's deadline has passed; its timeout is being recorded")
            due = now + step_row.timeout
            # Conditional on the row as read: a claim that took it for its timeout
            # meanwhile, or a reschedule, makes this miss (and the transaction run again).
            await update_many(
                Delivery,
                [
                    (
                        {"id": delivery.id},
                        {"attempt": claim.attempt, "awaiting": True, "lease_owner": None},
                        {"due_at": due},
                    )
                ],
            )
        return due

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


async def _update_delivery(delivery: Row, **changes: Any) -> None:
    """Update the delivery row an answer was for, if it still holds that attempt."""
    await update_many(Delivery, [({"id": delivery.id}, {"attempt": delivery.attempt}, changes)])
