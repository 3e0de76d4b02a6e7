"""The one gateway to the database.

Only this module touches Tortoise models. It hands out plain values (dicts in
the API's wire shape, or small dataclasses for the dispatcher), and every
state change is a conditional update plus its event rows inside one
transaction: an update that matches nothing means the state moved on under us,
never a silent overwrite.

Work is claimed, never remembered: what Baton owes anyone is a row in
``deliveries`` with a due time; a process claims due rows under a lease, and
a row whose lease ran out is claimed again by whoever comes next.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.expressions import F, Q
from tortoise.transactions import in_transaction

from app import dag
from app.conditions import ConditionError, compile_condition
from app.engine import (
    CALLBACK_KINDS,
    CALLBACK_RETRY_POLICY,
    AttemptResult,
    Backoff,
    DeliveryKind,
    RetryPolicy,
    StepError,
    StepErrorCode,
    StepStatus,
    WorkflowErrorCode,
    WorkflowStatus,
    WorkflowView,
    callback_kind_for,
    decide_after_attempt,
    dooms_workflow,
    final_status,
    previous_steps,
    satisfies_dependents,
    workflow_error,
)
from app.errors import Conflict, StoreError
from app.models import Attempt, Delivery, Event, ServerSecret, Step, Workflow
from app.schemas import WorkflowCreate

log = logging.getLogger("baton.store")

#: How many workflow graphs (step ids and edges, immutable once created) stay cached.
GRAPH_CACHE_STEPS = 200_000
LIST_LIMIT_DEFAULT = 50
LIST_LIMIT_MAX = 500


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z``, millisecond precision (the wire format for times)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_value(value: Any) -> Any:
    """A value for a JSON column: Tortoise takes a bare ``str`` as already-encoded JSON."""
    return orjson.dumps(value).decode() if isinstance(value, str) else value


def new_workflow_id() -> str:
    return f"wf_{uuid.uuid4().hex}"


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def message_id(workflow_id: str, step_id: str | None, kind: DeliveryKind, run_id: str) -> str:
    """The webhook-id: one per step run (or callback), stable across automatic attempts."""
    digest = hashlib.sha256(f"{workflow_id}\0{step_id}\0{kind}\0{run_id}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed delivery: everything the dispatcher needs to send it, and nothing else."""

    delivery_id: int
    workflow_id: str
    workflow_name: str | None
    kind: DeliveryKind
    step_id: str | None
    attempt: int
    message_id: str
    url: str
    timeout: float
    policy: RetryPolicy
    run_id: str | None = None
    context: Any = None
    previous_steps: dict[str, Any] | None = None
    #: The body for callbacks (fixed when the workflow ended).
    payload: dict[str, Any] | None = None
    #: An async step whose deadline passed: settle as a timeout, send nothing.
    expired: bool = False
    #: Claimed again after another process's lease ran out (same webhook-id).
    takeover: bool = False


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of sending one job, to be settled in the database."""

    job: Job
    result: AttemptResult
    started_at: datetime
    duration_ms: float


@dataclass(slots=True)
class SettleSummary:
    #: Deliveries that became due right now (wake the dispatcher).
    due_now: int = 0
    events: int = 0


@dataclass(slots=True)
class _Graph:
    """A workflow's DAG, immutable once created, cached per process."""

    depends_on: dict[str, list[str]]

    @property
    def size(self) -> int:
        return len(self.depends_on)


@dataclass(slots=True)
class _Tx:
    """What one transaction accumulates before writing it in bulk."""

    events: list[Event] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    now: datetime = field(default_factory=utcnow)

    def event(self, workflow_id: str, type_: str, step_id: str | None = None, **data: Any) -> None:
        self.events.append(
            Event(workflow_id=workflow_id, step_id=step_id, type=type_, at=self.now, data=data)
        )


# --------------------------------------------------------------------------- store


class Store:
    """Domain operations over the database; one instance per server process."""

    def __init__(self, *, owner: str | None = None) -> None:
        #: Identifies this process in leases.
        self.owner = owner or f"baton-{uuid.uuid4().hex[:12]}"
        self._graphs: OrderedDict[str, _Graph] = OrderedDict()
        self._graph_steps = 0

    # ----------------------------------------------------------------- health

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        try:
            await Workflow.filter(id="").exists()
        except (OperationalError, OSError) as exc:
            raise StoreError(f"database unreachable: {exc}") from exc

    async def server_secret(self, name: str) -> str:
        """A secret shared by every process on this database, created on first use."""
        row = await ServerSecret.get_or_none(name=name)
        if row is None:
            try:
                row = await ServerSecret.create(
                    name=name, value=secrets.token_urlsafe(32), created_at=utcnow()
                )
            except IntegrityError:
                row = await ServerSecret.get(name=name)
        return row.value

    # ----------------------------------------------------------------- create

    async def create_workflow(
        self,
        spec: WorkflowCreate,
        *,
        request_hash: str,
        idempotency_key: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Store a new workflow and make its root steps due; idempotent by id or key.

        Answers (status document, created). A second create with the same id (or
        Idempotency-Key) and the same body answers the stored workflow; a different
        body raises Conflict.
        """
        workflow_id = spec.id or new_workflow_id()
        existing = await self._find_existing(workflow_id if spec.id else None, idempotency_key)
        if existing is not None:
            return await self._same_or_conflict(existing, request_hash), False
        try:
            async with in_transaction():
                await self._insert_workflow(spec, workflow_id, request_hash, idempotency_key)
        except IntegrityError as exc:
            # Lost a race with an identical create: answer like the idempotent path.
            existing = await self._find_existing(workflow_id if spec.id else None, idempotency_key)
            if existing is None:
                raise StoreError(f"could not store workflow: {exc}") from exc
            return await self._same_or_conflict(existing, request_hash), False
        document = await self.get_workflow(workflow_id)
        assert document is not None
        return document, True

    async def _find_existing(
        self, workflow_id: str | None, idempotency_key: str | None
    ) -> Workflow | None:
        if workflow_id is not None:
            found = await Workflow.get_or_none(id=workflow_id)
            if found is not None:
                return found
        if idempotency_key is not None:
            return await Workflow.get_or_none(idempotency_key=idempotency_key)
        return None

    async def _same_or_conflict(self, existing: Workflow, request_hash: str) -> dict[str, Any]:
        if existing.request_hash != request_hash:
            raise Conflict(f"workflow '{existing.id}' already exists with a different request body")
        document = await self.get_workflow(existing.id)
        assert document is not None
        return document

    async def _insert_workflow(
        self,
        spec: WorkflowCreate,
        workflow_id: str,
        request_hash: str,
        idempotency_key: str | None,
    ) -> None:
        tx = _Tx()
        now = tx.now
        deps = {s.id: list(s.depends_on) for s in spec.steps}
        dependents = dag.dependents_of(deps)
        await Workflow.create(
            id=workflow_id,
            name=spec.name,
            status=WorkflowStatus.RUNNING,
            context=spec.context,
            saga=spec.saga,
            fail_fast=spec.fail_fast,
            timeout=spec.timeout,
            on_complete=spec.on_complete,
            on_error=spec.on_error,
            created_at=now,
            started_at=now,
            deadline_at=datetime.fromtimestamp(now.timestamp() + spec.timeout, UTC),
            request_hash=request_hash,
            idempotency_key=idempotency_key,
            open_steps=len(spec.steps),
            step_count=len(spec.steps),
        )
        tx.event(workflow_id, "workflow.created", name=spec.name, steps=len(spec.steps))
        tx.event(workflow_id, "workflow.started")
        rows = []
        for position, s in enumerate(spec.steps):
            rows.append(
                Step(
                    workflow_id=workflow_id,
                    step_id=s.id,
                    position=position,
                    url=s.url,
                    depends_on=list(s.depends_on),
                    dependents=dependents[s.id],
                    deps_remaining=len(s.depends_on),
                    status=StepStatus.PENDING,
                    attempts=0,
                    retry=RetryPolicy(
                        max_attempts=s.retries.max_attempts,
                        backoff=Backoff(s.retries.backoff),
                        delay=s.retries.delay,
                        max_delay=s.retries.max_delay,
                        jitter=s.retries.jitter,
                    ).to_dict(),
                    timeout=s.timeout,
                    compensation=s.compensation,
                    condition=s.when,
                    continue_on_failure=s.continue_on_failure,
                    run_id=new_run_id(),
                )
            )
        await Step.bulk_create(rows, batch_size=1000)
        self._remember_graph(workflow_id, deps)
        # bulk_create does not hand back primary keys on every database: read the roots.
        roots = await Step.filter(workflow_id=workflow_id, deps_remaining=0).order_by("position")
        state = _WorkflowState(
            id=workflow_id,
            name=spec.name,
            status=WorkflowStatus.RUNNING,
            context=spec.context,
            fail_fast=spec.fail_fast,
            saga=spec.saga,
            failed_step=None,
            open_steps=len(rows),
            on_complete=spec.on_complete,
            on_error=spec.on_error,
            created_at=now,
        )
        cascade = _Cascade(self, tx, state)
        for row in roots:
            await cascade.make_ready(row)
        await cascade.run()
        await self._flush(tx)

    # ----------------------------------------------------------------- read

    async def get_workflow(self, workflow_id: str) -> dict[str, Any] | None:
        """The status document of DESIGN §3, or None."""
        workflow = await Workflow.get_or_none(id=workflow_id)
        if workflow is None:
            return None
        steps = await Step.filter(workflow_id=workflow_id).order_by("position")
        return _status_document(workflow, steps)

    async def list_workflows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int = LIST_LIMIT_DEFAULT,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Workflow summaries, newest first, with an opaque cursor for the next page."""
        query = Workflow.all()
        if status:
            query = query.filter(status=status)
        if name:
            query = query.filter(name=name)
        if cursor:
            created_at, last_id = decode_cursor(cursor)
            query = query.filter(
                Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=last_id)
            )
        rows = await query.order_by("-created_at", "-id").limit(limit + 1)
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
        return [_summary(w) for w in rows], next_cursor

    async def get_step(self, workflow_id: str, step_id: str) -> dict[str, Any] | None:
        """A step's document plus its ``attemptLog``, or None."""
        step = await Step.get_or_none(workflow_id=workflow_id, step_id=step_id)
        if step is None:
            return None
        attempts = await Attempt.filter(workflow_id=workflow_id, step_id=step_id).order_by("id")
        document = _step_document(step)
        document["attemptLog"] = [_attempt_document(a) for a in attempts]
        return document

    async def get_dependencies(self, workflow_id: str, step_id: str) -> dict[str, Any] | None:
        step = await Step.get_or_none(workflow_id=workflow_id, step_id=step_id).only(
            "depends_on", "dependents"
        )
        if step is None:
            return None
        return {"dependsOn": list(step.depends_on), "dependedOnBy": list(step.dependents)}

    async def workflow_exists(self, workflow_id: str) -> bool:
        return await Workflow.filter(id=workflow_id).exists()

    async def get_workflow_status(self, workflow_id: str) -> str | None:
        status = await Workflow.filter(id=workflow_id).first().values_list("status", flat=True)
        return None if status is None else str(status)

    async def has_pending_deliveries(self, workflow_id: str) -> bool:
        """Whether anything is still owed for this workflow (steps or callbacks)."""
        return await Delivery.filter(workflow_id=workflow_id).exists()

    async def list_events(
        self, workflow_id: str, *, after: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The workflow's events, oldest first (optionally only those after an event id)."""
        query = Event.filter(workflow_id=workflow_id)
        if after is not None:
            query = query.filter(id__gt=after)
        query = query.order_by("id")
        if limit is not None:
            query = query.limit(limit)
        return [_event_document(e) for e in await query]

    # ----------------------------------------------------------------- claim

    async def claim_due(
        self, limit: int, *, lease_seconds: float, now: float | None = None
    ) -> list[Job]:
        """Claim up to ``limit`` due deliveries under a lease and describe them as jobs.

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
                lease_owner=self.owner, lease_until=now + lease_seconds, started=True
            )
            tx = _Tx()
            jobs = await self._describe(rows, tx)
            await self._flush(tx)
        return jobs

    async def _describe(self, rows: Sequence[Delivery], tx: _Tx) -> list[Job]:
        workflow_ids = {r.workflow_id for r in rows}  # type: ignore[attr-defined]
        workflows = {w.id: w for w in await Workflow.filter(id__in=workflow_ids)}
        step_rows: dict[tuple[str, str], Step] = {}
        step_keys = [(r.workflow_id, r.step_id) for r in rows if r.step_id]  # type: ignore[attr-defined]
        for owner_id in {k[0] for k in step_keys}:
            ids = [k[1] for k in step_keys if k[0] == owner_id]
            for s in await Step.filter(workflow_id=owner_id, step_id__in=ids):
                step_rows[(owner_id, s.step_id)] = s
        jobs: list[Job] = []
        for row in rows:
            wf_id: str = row.workflow_id  # type: ignore[attr-defined]
            workflow = workflows[wf_id]
            kind = DeliveryKind(row.kind)
            takeover = row.started
            if kind in CALLBACK_KINDS:
                jobs.append(
                    Job(
                        delivery_id=row.id,
                        workflow_id=wf_id,
                        workflow_name=workflow.name,
                        kind=kind,
                        step_id=None,
                        attempt=row.attempt,
                        message_id=row.message_id,
                        url=row.url,
                        timeout=CALLBACK_TIMEOUT_SECONDS,
                        policy=CALLBACK_RETRY_POLICY,
                        payload=row.payload,
                        takeover=takeover,
                    )
                )
                continue
            step = step_rows[(wf_id, row.step_id)]  # type: ignore[index]
            if kind is DeliveryKind.STEP and not takeover and not row.awaiting:
                updated = await Step.filter(
                    id=step.id, status__in=(StepStatus.RUNNING, StepStatus.RETRYING)
                ).update(status=StepStatus.RUNNING, attempts=row.attempt)
                if updated:
                    tx.event(wf_id, "step.started", step.step_id, attempt=row.attempt)
            ancestors = dag.ancestors(step.step_id, await self._graph(wf_id))
            states = await self._step_states(wf_id, ancestors)
            jobs.append(
                Job(
                    delivery_id=row.id,
                    workflow_id=wf_id,
                    workflow_name=workflow.name,
                    kind=kind,
                    step_id=step.step_id,
                    attempt=row.attempt,
                    message_id=row.message_id,
                    url=row.url,
                    timeout=step.timeout,
                    policy=RetryPolicy.from_dict(step.retry),
                    run_id=step.run_id,
                    context=workflow.context,
                    previous_steps=previous_steps(ancestors, states),
                    expired=row.awaiting,
                    takeover=takeover and not row.awaiting,
                )
            )
        return jobs

    async def _step_states(
        self, workflow_id: str, step_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        if not step_ids:
            return {}
        rows = await Step.filter(workflow_id=workflow_id, step_id__in=list(step_ids)).values(
            "step_id", "status", "result", "error"
        )
        return {r["step_id"]: r for r in rows}

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

    # ----------------------------------------------------------------- settle

    async def settle(self, reports: Sequence[Report], *, rand: Any = None) -> SettleSummary:
        """Record a batch of attempt outcomes and every transition they cause, in one commit."""
        summary = SettleSummary()
        if not reports:
            return summary
        async with in_transaction():
            tx = _Tx()
            for report in reports:
                await self._settle_one(report, tx, rand)
            await self._flush(tx)
        now = time.time()
        summary.due_now = sum(1 for d in tx.deliveries if d.due_at <= now)
        summary.events = len(tx.events)
        return summary

    async def _settle_one(self, report: Report, tx: _Tx, rand: Any) -> None:
        job = report.job
        result = report.result
        tx.attempts.append(
            Attempt(
                workflow_id=job.workflow_id,
                step_id=job.step_id,
                kind=job.kind,
                number=job.attempt,
                message_id=job.message_id,
                started_at=report.started_at,
                duration_ms=round(report.duration_ms, 3),
                http_status=result.http_status,
                outcome=result.outcome,
                error=result.error.to_dict() if result.error else None,
                response_excerpt=result.excerpt,
            )
        )
        # The delivery must still be ours, for this attempt: a process whose lease ran
        # out may answer after another took the row over; the first answer wins.
        delivery = await Delivery.get_or_none(id=job.delivery_id, attempt=job.attempt)
        if delivery is None:
            return
        if job.kind in CALLBACK_KINDS:
            await self._settle_callback(job, result, delivery, tx, rand)
            return
        if job.kind is DeliveryKind.STEP:
            await self._settle_step(job, result, delivery, tx, rand)

    async def _settle_callback(
        self, job: Job, result: AttemptResult, delivery: Delivery, tx: _Tx, rand: Any
    ) -> None:
        decision = decide_after_attempt(result, job.attempt, job.policy, rand=rand)
        if decision.status is StepStatus.COMPLETED or decision.status is StepStatus.RUNNING:
            await Delivery.filter(id=delivery.id).delete()
            tx.event(job.workflow_id, "callback.delivered", kind=job.kind, attempt=job.attempt)
        elif decision.status is StepStatus.RETRYING:
            assert decision.retry_in is not None
            await self._reschedule(delivery, decision.retry_in)
        else:
            await Delivery.filter(id=delivery.id).delete()
            tx.event(
                job.workflow_id,
                "callback.failed",
                kind=job.kind,
                attempt=job.attempt,
                error=decision.error.to_dict() if decision.error else None,
            )

    async def _reschedule(self, delivery: Delivery, retry_in: float) -> None:
        await Delivery.filter(id=delivery.id).update(
            attempt=delivery.attempt + 1,
            due_at=time.time() + retry_in,
            started=False,
            awaiting=False,
            lease_owner=None,
            lease_until=None,
        )

    async def _settle_step(
        self, job: Job, result: AttemptResult, delivery: Delivery, tx: _Tx, rand: Any
    ) -> None:
        assert job.step_id is not None
        state = await self._load_state(job.workflow_id)
        step = await Step.get_or_none(workflow_id=job.workflow_id, step_id=job.step_id)
        if state is None or step is None or step.status != StepStatus.RUNNING:
            await Delivery.filter(id=delivery.id).delete()
            return
        may_retry = state.status is WorkflowStatus.RUNNING and not (
            state.failed_step is not None and state.fail_fast
        )
        policy = RetryPolicy.from_dict(step.retry)
        decision = decide_after_attempt(result, job.attempt, policy, may_retry=may_retry, rand=rand)
        error = decision.error.to_dict() if decision.error else None
        cascade = _Cascade(self, tx, state)
        if decision.status is StepStatus.RUNNING:
            # Async: the step waits for its callback until the deadline in due_at.
            await Delivery.filter(id=delivery.id).update(
                awaiting=True,
                due_at=time.time() + step.timeout,
                lease_owner=None,
                lease_until=None,
            )
            tx.event(job.workflow_id, "step.waiting", job.step_id, attempt=job.attempt)
        elif decision.status is StepStatus.RETRYING:
            assert decision.retry_in is not None
            updated = await Step.filter(id=step.id, status=StepStatus.RUNNING).update(
                status=StepStatus.RETRYING, error=error
            )
            if updated:
                await self._reschedule(delivery, decision.retry_in)
                tx.event(
                    job.workflow_id, "step.failed", job.step_id, attempt=job.attempt, error=error
                )
                tx.event(
                    job.workflow_id,
                    "step.retrying",
                    job.step_id,
                    attempt=job.attempt + 1,
                    delay=round(decision.retry_in, 3),
                )
        else:
            await Delivery.filter(id=delivery.id).delete()
            if decision.status is StepStatus.COMPLETED:
                await cascade.settle(step, StepStatus.COMPLETED, result=decision.result)
            else:
                tx.event(
                    job.workflow_id, "step.failed", job.step_id, attempt=job.attempt, error=error
                )
                await cascade.settle(step, StepStatus.FAILED, error=error)
        await cascade.run()

    async def _load_state(self, workflow_id: str) -> _WorkflowState | None:
        w = await Workflow.get_or_none(id=workflow_id)
        if w is None:
            return None
        return _WorkflowState(
            id=w.id,
            name=w.name,
            status=WorkflowStatus(w.status),
            context=w.context,
            fail_fast=w.fail_fast,
            saga=w.saga,
            failed_step=w.failed_step,
            open_steps=w.open_steps,
            on_complete=w.on_complete,
            on_error=w.on_error,
            created_at=w.created_at,
        )

    # ----------------------------------------------------------------- helpers

    async def _flush(self, tx: _Tx) -> None:
        if tx.attempts:
            await Attempt.bulk_create(tx.attempts)
        if tx.deliveries:
            await Delivery.bulk_create(tx.deliveries)
        if tx.events:
            await Event.bulk_create(tx.events)

    def _remember_graph(self, workflow_id: str, deps: dict[str, list[str]]) -> None:
        graph = _Graph(deps)
        self._graphs[workflow_id] = graph
        self._graph_steps += graph.size
        while self._graph_steps > GRAPH_CACHE_STEPS and len(self._graphs) > 1:
            _, old = self._graphs.popitem(last=False)
            self._graph_steps -= old.size

    async def _graph(self, workflow_id: str) -> dict[str, list[str]]:
        graph = self._graphs.get(workflow_id)
        if graph is None:
            rows = await Step.filter(workflow_id=workflow_id).values_list("step_id", "depends_on")
            self._remember_graph(workflow_id, {sid: list(deps) for sid, deps in rows})
            graph = self._graphs[workflow_id]
        else:
            self._graphs.move_to_end(workflow_id)
        return graph.depends_on


CALLBACK_TIMEOUT_SECONDS = 30.0


@dataclass(slots=True)
class _WorkflowState:
    id: str
    name: str | None
    status: WorkflowStatus
    context: Any
    fail_fast: bool
    saga: bool
    failed_step: str | None
    open_steps: int
    on_complete: str | None
    on_error: str | None
    created_at: datetime


class _Cascade:
    """Applies one settled step and everything it causes, breadth first, in one transaction.

    A settled step counts down its dependents; a dependent whose count reaches zero
    becomes ready (or is skipped by its condition, which settles it in turn); a
    dependent that can never run is cancelled, which settles it in turn. No step
    is looked at twice and the whole DAG is never scanned.
    """

    def __init__(self, store: Store, tx: _Tx, state: _WorkflowState) -> None:
        self.store = store
        self.tx = tx
        self.state = state
        self.queue: deque[tuple[Step, StepStatus]] = deque()
        self.settled_count = 0
        self.dirty = False

    @property
    def may_start(self) -> bool:
        """Whether new steps may start (running, and not doomed under failFast)."""
        return self.state.status is WorkflowStatus.RUNNING and not (
            self.state.failed_step is not None and self.state.fail_fast
        )

    async def settle(
        self,
        step: Step,
        status: StepStatus,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        allowed: Sequence[StepStatus] = (StepStatus.RUNNING,),
    ) -> bool:
        """Move ``step`` to a settled status (conditionally) and queue its consequences."""
        fields: dict[str, Any] = {"status": status, "completed_at": self.tx.now}
        if status is StepStatus.COMPLETED:
            fields.update(result=json_value(result), error=None, completion_seq=time.time_ns())
        elif error is not None:
            fields["error"] = error
        updated = await Step.filter(id=step.id, status__in=list(allowed)).update(**fields)
        if not updated:
            return False
        step.status = status
        self.settled_count += 1
        wf = self.state.id
        if status is StepStatus.COMPLETED:
            self.tx.event(wf, "step.completed", step.step_id, attempt=step.attempts or None)
        elif status is StepStatus.CANCELLED:
            self.tx.event(wf, "step.cancelled", step.step_id, reason=(error or {}).get("message"))
        elif status is StepStatus.SKIPPED:
            self.tx.event(wf, "step.skipped", step.step_id)
        if dooms_workflow(status, step.continue_on_failure) and self.state.failed_step is None:
            self.state.failed_step = step.step_id
            self.dirty = True
            if self.state.fail_fast:
                await self._cancel_open_steps(f"step '{step.step_id}' failed")
        self.queue.append((step, status))
        return True

    async def make_ready(self, step: Step) -> None:
        """A step whose dependencies are all settled: skip it, or make it due now."""
        if not self.may_start:
            await self.settle(
                step,
                StepStatus.CANCELLED,
                error={"code": "cancelled", "message": "the workflow is no longer running"},
                allowed=(StepStatus.PENDING,),
            )
            return
        if step.condition:
            verdict = await self._evaluate(step)
            if verdict is not True:
                if verdict is False:
                    await self.settle(step, StepStatus.SKIPPED, allowed=(StepStatus.PENDING,))
                else:
                    error = StepError(StepErrorCode.HANDLER_ERROR, verdict).to_dict()
                    error["code"] = "condition_error"
                    self.tx.event(self.state.id, "step.failed", step.step_id, error=error)
                    await self.settle(
                        step, StepStatus.FAILED, error=error, allowed=(StepStatus.PENDING,)
                    )
                return
        updated = await Step.filter(id=step.id, status=StepStatus.PENDING).update(
            status=StepStatus.RUNNING, started_at=self.tx.now, error=None, result=None
        )
        if not updated:
            return
        step.status = StepStatus.RUNNING
        self.tx.deliveries.append(
            Delivery(
                workflow_id=self.state.id,
                step_id=step.step_id,
                kind=DeliveryKind.STEP,
                attempt=1,
                message_id=message_id(self.state.id, step.step_id, DeliveryKind.STEP, step.run_id),
                due_at=time.time(),
                url=step.url,
            )
        )

    async def _evaluate(self, step: Step) -> bool | str:
        """True/False from the step's `when`, or an error message."""
        try:
            condition = compile_condition(step.condition or "")
            ancestors = dag.ancestors(step.step_id, await self.store._graph(self.state.id))
            states = await self.store._step_states(self.state.id, ancestors)
            steps = {
                sid: {k: v for k, v in prev.items()}
                for sid, prev in previous_steps(ancestors, states).items()
            }
            return condition.evaluate(self.state.context, steps)
        except ConditionError as exc:
            return f"`when` could not be evaluated: {exc}"

    async def run(self) -> None:
        """Drain the queue of settled steps, then finish the workflow if nothing is open."""
        while self.queue:
            step, status = self.queue.popleft()
            if not step.dependents:
                continue
            satisfied = satisfies_dependents(status, step.continue_on_failure)
            for dependent in await Step.filter(
                workflow_id=self.state.id, step_id__in=list(step.dependents)
            ):
                if dependent.status != StepStatus.PENDING:
                    continue
                if not satisfied:
                    await self.settle(
                        dependent,
                        StepStatus.CANCELLED,
                        error={
                            "code": "cancelled",
                            "message": f"dependency '{step.step_id}' {status}",
                        },
                        allowed=(StepStatus.PENDING,),
                    )
                    continue
                remaining = dependent.deps_remaining - 1
                await Step.filter(id=dependent.id).update(deps_remaining=F("deps_remaining") - 1)
                dependent.deps_remaining = remaining
                if remaining == 0:
                    await self.make_ready(dependent)
        await self._finish()

    async def _cancel_open_steps(self, reason: str) -> None:
        """failFast: nothing new starts anywhere; pending and retrying steps are cancelled."""
        rows = await Step.filter(
            workflow_id=self.state.id, status__in=(StepStatus.PENDING, StepStatus.RETRYING)
        )
        for row in rows:
            settled = await self.settle(
                row,
                StepStatus.CANCELLED,
                error={"code": "cancelled", "message": reason},
                allowed=(StepStatus.PENDING, StepStatus.RETRYING),
            )
            if settled:
                await Delivery.filter(
                    workflow_id=self.state.id, step_id=row.step_id, kind=DeliveryKind.STEP
                ).delete()

    async def _finish(self) -> None:
        state = self.state
        if not self.settled_count and not self.dirty:
            return
        state.open_steps -= self.settled_count
        updates: dict[str, Any] = {"open_steps": F("open_steps") - self.settled_count}
        if self.dirty:
            updates["failed_step"] = state.failed_step
        view = WorkflowView(
            status=state.status, open_steps=state.open_steps, failed_step=state.failed_step
        )
        outcome = final_status(view)
        self.settled_count = 0
        self.dirty = False
        if outcome is None:
            await Workflow.filter(id=state.id).update(**updates)
            return
        error = None
        if state.failed_step is not None:
            failed = await Step.get_or_none(workflow_id=state.id, step_id=state.failed_step)
            error = workflow_error(
                WorkflowErrorCode.STEP_FAILED, state.failed_step, failed.error if failed else None
            )
        updates.update(status=outcome, completed_at=self.tx.now, error=error)
        updated = await Workflow.filter(id=state.id, status=WorkflowStatus.RUNNING).update(
            **updates
        )
        if not updated:
            return
        state.status = outcome
        self.tx.event(state.id, f"workflow.{outcome}", error=error)
        await self._enqueue_callback(outcome, error)

    async def _enqueue_callback(self, status: WorkflowStatus, error: Any) -> None:
        kind = callback_kind_for(status)
        state = self.state
        url = state.on_complete if kind is DeliveryKind.ON_COMPLETE else state.on_error
        if kind is None or not url:
            return
        steps = await Step.filter(workflow_id=state.id).order_by("position")
        document = _outcome_lists(steps)
        payload = {
            "workflowId": state.id,
            "workflowName": state.name,
            "status": status.value,
            "context": state.context,
            "results": document["results"],
            "completedSteps": document["completedSteps"],
            "failedSteps": document["failedSteps"],
            "skippedSteps": document["skippedSteps"],
            "error": error,
            "completedAt": iso(self.tx.now),
        }
        self.tx.deliveries.append(
            Delivery(
                workflow_id=state.id,
                step_id=None,
                kind=kind,
                attempt=1,
                message_id=message_id(state.id, None, kind, new_run_id()),
                due_at=time.time(),
                url=url,
                payload=payload,
            )
        )


# --------------------------------------------------------------------------- documents


def _outcome_lists(steps: Sequence[Step]) -> dict[str, Any]:
    completed = sorted(
        (s for s in steps if s.status == StepStatus.COMPLETED),
        key=lambda s: (s.completion_seq or 0, s.position),
    )
    return {
        "currentSteps": [
            s.step_id for s in steps if s.status in (StepStatus.RUNNING, StepStatus.RETRYING)
        ],
        "completedSteps": [s.step_id for s in completed],
        "failedSteps": [s.step_id for s in steps if s.status == StepStatus.FAILED],
        "skippedSteps": [s.step_id for s in steps if s.status == StepStatus.SKIPPED],
        "results": {s.step_id: s.result for s in completed},
    }


def _summary(w: Workflow) -> dict[str, Any]:
    return {
        "id": w.id,
        "name": w.name,
        "status": w.status,
        "createdAt": iso(w.created_at),
        "startedAt": iso(w.started_at),
        "completedAt": iso(w.completed_at),
        "stepCount": w.step_count,
        "error": w.error,
    }


def _status_document(w: Workflow, steps: Sequence[Step]) -> dict[str, Any]:
    lists = _outcome_lists(steps)
    return {
        "id": w.id,
        "name": w.name,
        "status": w.status,
        "context": w.context,
        "saga": w.saga,
        "failFast": w.fail_fast,
        "timeout": w.timeout,
        "onComplete": w.on_complete,
        "onError": w.on_error,
        "createdAt": iso(w.created_at),
        "startedAt": iso(w.started_at),
        "completedAt": iso(w.completed_at),
        "currentSteps": lists["currentSteps"],
        "completedSteps": lists["completedSteps"],
        "failedSteps": lists["failedSteps"],
        "skippedSteps": lists["skippedSteps"],
        "results": lists["results"],
        "error": w.error,
        "steps": [_step_document(s) for s in steps],
    }


def _step_document(s: Step) -> dict[str, Any]:
    retry = s.retry or {}
    return {
        "id": s.step_id,
        "url": s.url,
        "dependsOn": list(s.depends_on),
        "status": s.status,
        "attempts": s.attempts,
        "maxAttempts": retry.get("maxAttempts"),
        "startedAt": iso(s.started_at),
        "completedAt": iso(s.completed_at),
        "result": s.result,
        "error": s.error,
        "compensation": s.compensation,
        "compensationStatus": s.compensation_status,
        "when": s.condition,
        "continueOnFailure": s.continue_on_failure,
        "timeout": s.timeout,
        "retries": retry,
    }


def _attempt_document(a: Attempt) -> dict[str, Any]:
    return {
        "kind": a.kind,
        "number": a.number,
        "webhookId": a.message_id,
        "startedAt": iso(a.started_at),
        "durationMs": a.duration_ms,
        "httpStatus": a.http_status,
        "outcome": a.outcome,
        "error": a.error,
        "response": a.response_excerpt,
    }


def _event_document(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "type": e.type,
        "workflowId": e.workflow_id,  # type: ignore[attr-defined]
        "stepId": e.step_id,
        "at": iso(e.at),
        "data": e.data or {},
    }


def encode_cursor(created_at: datetime, workflow_id: str) -> str:
    raw = orjson.dumps([created_at.astimezone(UTC).isoformat(), workflow_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Parse a list cursor; ValueError when it was not made by encode_cursor."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, workflow_id = orjson.loads(base64.urlsafe_b64decode(padded))
        when = datetime.fromisoformat(created)
        if not isinstance(workflow_id, str) or when.tzinfo is None:
            raise ValueError("bad cursor")
        return when, workflow_id
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError("invalid cursor") from exc
