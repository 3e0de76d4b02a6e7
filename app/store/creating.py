"""Creating workflows: validated specs become rows, their roots due, in group commits.

A create is not inserted on its own: creates that arrive while an insert is
under way wait for it and are then inserted together, in one transaction (a
COMMIT costs more than the inserts of a small workflow). The rows are written
in the state the machine leaves them in after ``start()`` — roots already
running, their requests due — and up to the caller's hand-off budget of those
requests is claimed for this process, to be sent without a claim round.

Ids and ``Idempotency-Key``s are scoped by namespace; the same id or key with
the same body answers the stored workflow, with another body ``Conflict``.

`when` conditions decided at creation — the roots', and those of steps their
skips or failures make ready — are decided before the create joins a group
commit, so that no transaction waits for a condition worker.

A batch (``POST /v1/workflows/batch``) is one group commit of its own: every
workflow of it is inserted in one transaction, or none is. A workflow with a
delayed start is inserted ``pending`` with nothing due; the sweeper starts it at its
time (``Actions.start_due_workflows``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app import dag
from app.conditions import ConditionCheck, Verdict
from app.engine import Backoff, OnFailure, RetryPolicy, StepStatus, WorkflowStatus
from app.errors import Conflict, FieldError, StoreError
from app.machine import Machine
from app.models import Step, Workflow
from app.schemas import WorkflowCreate
from app.store.graphs import Graph
from app.store.reading import load_status_document
from app.store.render import status_document
from app.store.rows import new_run_id, new_workflow_id, step_state, utcnow, workflow_state
from app.store.session import StepGuard, StoreCore, Writes
from app.store.sql import insert_many
from app.store.work import Handoff, OutboundRequest
from app.tenants import (
    DEFAULT_NAMESPACE,
    namespace_of,
    public_id,
    scoped_id,
    scoped_idempotency_key,
)


@dataclass(slots=True)
class NewWorkflow:
    """A validated workflow about to be inserted, and what its rows need besides its spec."""

    spec: WorkflowCreate
    #: The scoped id.
    workflow_id: str
    request_hash: str
    idempotency_key: str | None
    budget: Handoff
    #: Verdicts of the conditions the start of the workflow decides, by step id.
    verdicts: dict[str, Verdict]
    #: A delayed start: ``pending`` until then (None: it starts at once).
    start_at: datetime | None = None
    #: The schedule that fires it (scoped id) and the tick it fires for.
    schedule_id: str | None = None
    scheduled_at: datetime | None = None


@dataclass(slots=True)
class PendingCreate(NewWorkflow):
    """A create waiting to be inserted with the others that arrived meanwhile."""

    #: The status document, or the exception the insert raised.
    future: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


#: What ``_insert_workflows`` made of one ``NewWorkflow``: its rows and its graph.
Inserted = tuple[SimpleNamespace, list[SimpleNamespace], Graph]


def settle_future(future: asyncio.Future[Any], outcome: Any) -> None:
    """Resolve ``future`` with a result or an exception, unless its caller is gone."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class Creating(StoreCore):
    """Creating workflows (group commits of creates)."""

    def __init__(self, *, owner: str | None = None) -> None:
        super().__init__(owner=owner)
        #: Creates waiting for the task that inserts them together.
        self._creates: list[PendingCreate] = []
        self._creating: asyncio.Task[None] | None = None

    async def create_workflow(
        self,
        spec: WorkflowCreate,
        *,
        request_hash: str,
        idempotency_key: str | None = None,
        handoff: int = 0,
        lease_seconds: float = 30.0,
        on_requests: Callable[[list[OutboundRequest]], None] | None = None,
        on_due: Callable[[], None] | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> tuple[dict[str, Any], bool]:
        """Store a new workflow of ``namespace`` and make its root steps due; idempotent
        by id or key, both scoped by the namespace.

        Answers (status document, created). A second create with the same id (or
        Idempotency-Key) and the same body answers the stored workflow; a different
        body raises Conflict. Up to ``handoff`` root requests are claimed for this
        process and passed to ``on_requests`` once committed, to be sent at once;
        ``on_due`` is called once committed if requests were left due for a claim.
        """
        budget = Handoff(handoff, lease_seconds)
        workflow_id = scoped_id(namespace, spec.id or new_workflow_id())
        if idempotency_key is not None:
            idempotency_key = scoped_idempotency_key(namespace, idempotency_key)
        if spec.id is not None or idempotency_key is not None:
            existing = await self._find_existing(workflow_id if spec.id else None, idempotency_key)
            if existing is not None:
                return await self._same_or_conflict(existing, request_hash), False
        start_at = spec.start_time(utcnow())
        pending = PendingCreate(
            spec,
            workflow_id,
            request_hash,
            idempotency_key,
            budget,
            # A delayed workflow's conditions are decided when it begins.
            {} if start_at is not None else await self._start_verdicts(spec, workflow_id),
            start_at=start_at,
        )
        self._creates.append(pending)
        if self._creating is None or self._creating.done():
            self._creating = asyncio.create_task(self._insert_creates(), name="baton-creates")
        try:
            document = await pending.future
        except IntegrityError as exc:
            # Lost a race with an identical create: answer like the idempotent path.
            existing = await self._find_existing(workflow_id if spec.id else None, idempotency_key)
            if existing is None:
                raise StoreError(f"could not store workflow: {exc}") from exc
            return await self._same_or_conflict(existing, request_hash), False
        if on_requests is not None and budget.requests:
            on_requests(budget.requests)
        if on_due is not None and budget.left_due:
            on_due()
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
            raise Conflict(
                f"workflow '{public_id(existing.id)}' already exists with a different request body"
            )
        document = await load_status_document(existing.id)
        assert document is not None
        return document

    async def _start_verdicts(self, spec: WorkflowCreate, workflow_id: str) -> dict[str, Verdict]:
        """Decide the conditions that starting the workflow needs, outside any transaction.

        Usually those of the roots, which read only the context. A step whose every
        dependency has a condition may be made ready at the start too (they may all
        be skipped): then the machine is started on throwaway rows and given verdicts
        until it needs no more, and the real start finds the same steps ready.
        """
        conditional = {s.id for s in spec.steps if s.when}
        if not conditional:
            return {}
        if any(s.depends_on and conditional.issuperset(s.depends_on) for s in spec.steps if s.when):
            return await self._verdicts_of_a_trial_start(spec, workflow_id)
        roots = [s for s in spec.steps if s.when and not s.depends_on]
        checks = [ConditionCheck(s.id, s.when or "", spec.context, {}) for s in roots]
        verdicts = await self.conditions.decide(checks)
        return {c.step_id: v for c, v in zip(checks, verdicts, strict=True)}

    async def _verdicts_of_a_trial_start(
        self, spec: WorkflowCreate, workflow_id: str
    ) -> dict[str, Verdict]:
        trial = NewWorkflow(spec, workflow_id, "", None, Handoff(0, 0.0), {})
        _, _, machine, _ = _started(trial)
        decided: dict[str, Verdict] = {}
        while (need := machine.run()) is not None:
            assert need.conditions, "a new workflow has every step in memory"
            verdicts = await self.conditions.decide(need.conditions)
            given = {c.step_id: v for c, v in zip(need.conditions, verdicts, strict=True)}
            decided.update(given)
            machine.provide_verdicts(given)
        return decided

    def _prepare_workflow(self, create: NewWorkflow, writes: Writes) -> Inserted:
        """The rows of a new workflow and its steps in the state the machine leaves them
        in after start (rather than inserted and then updated); its first requests and
        events are collected in ``writes``."""
        workflow, rows, machine, graph = _started(create)
        assert machine.run() is None  # every step is in memory, every verdict given
        collected = len(writes.steps)
        loaded = {r.step_id: StepGuard(str(r.status), r.attempts, r.run_id) for r in rows}
        self._collect(machine, loaded, create.budget, writes)
        by_id = {r.step_id: r for r in rows}
        for (_, step_id), _, changes in writes.steps[collected:]:
            for name, value in changes.items():
                setattr(by_id[step_id], name, value)
        del writes.steps[collected:]
        for name, value in writes.workflows.pop(workflow.id, {}).items():
            setattr(workflow, name, value)
        return workflow, rows, graph

    async def _insert_creates(self) -> None:
        """Insert the creates waiting, all of them in one transaction (group commit)."""
        while self._creates:
            batch, self._creates = self._creates, []
            try:
                await self._insert_together(batch)
            except Exception as exc:
                if len(batch) == 1:
                    settle_future(batch[0].future, exc)
                    continue
                # One of them failed the batch (an id taken meanwhile): each on its own.
                for create in batch:
                    try:
                        await self._insert_together([create])
                    except Exception as single:
                        settle_future(create.future, single)

    async def _insert_together(self, batch: Sequence[PendingCreate]) -> None:
        for create in batch:
            create.budget.reset()
        async with in_transaction():
            prepared = await self._insert_workflows(batch)
        for create, (workflow, rows, _) in zip(batch, prepared, strict=True):
            settle_future(create.future, status_document(workflow, rows))

    async def _insert_workflows(self, creates: Sequence[NewWorkflow]) -> list[Inserted]:
        """Insert new workflows, their steps, first requests and events, inside the
        caller's transaction (a few statements for all of them); their graphs are
        remembered (a rolled-back insert leaves a graph nobody asks for)."""
        writes = Writes()
        prepared = [self._prepare_workflow(create, writes) for create in creates]
        await insert_many(Workflow, [vars(workflow) for workflow, _, _ in prepared])
        await insert_many(Step, [vars(r) for _, rows, _ in prepared for r in rows])
        await self._write(writes)
        for workflow, _, graph in prepared:
            self.graphs.remember(workflow.id, graph.depends_on, graph.dependents)
        return prepared

    async def create_workflows(
        self,
        items: Sequence[tuple[WorkflowCreate, str]],
        *,
        handoff: int = 0,
        lease_seconds: float = 30.0,
        on_requests: Callable[[list[OutboundRequest]], None] | None = None,
        on_due: Callable[[], None] | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Store a batch of new workflows of ``namespace`` in one transaction: all or none.

        ``items`` are (spec, request hash) in request order; the answer is their
        status documents in that order, and whether any was created. An item whose
        ``id`` exists with the same body answers the stored workflow; with another
        body, ``Conflict`` naming the item, and nothing is stored. Up to ``handoff``
        root requests are claimed for this process, as for one create.
        """
        budget = Handoff(handoff, lease_seconds)
        ids = [scoped_id(namespace, spec.id or new_workflow_id()) for spec, _ in items]
        now = utcnow()
        starts = [spec.start_time(now) for spec, _ in items]
        verdicts = [
            {} if start else await self._start_verdicts(spec, workflow_id)
            for (spec, _), workflow_id, start in zip(items, ids, starts, strict=True)
        ]
        for attempt in range(2):
            named = [i for i, (spec, _) in enumerate(items) if spec.id is not None]
            existing = await self._existing_documents({ids[i]: (i, items[i][1]) for i in named})
            creates = [
                NewWorkflow(
                    spec, ids[i], request_hash, None, budget, verdicts[i], start_at=starts[i]
                )
                for i, (spec, request_hash) in enumerate(items)
                if i not in existing
            ]
            budget.reset()
            try:
                async with in_transaction():
                    prepared = await self._insert_workflows(creates)
            except IntegrityError:
                if attempt:
                    raise
                continue  # an id was taken meanwhile: look again, then answer it or 409
            made = iter(status_document(w, rows) for w, rows, _ in prepared)
            documents = [existing[i] if i in existing else next(made) for i in range(len(items))]
            if on_requests is not None and budget.requests:
                on_requests(budget.requests)
            if on_due is not None and budget.left_due:
                on_due()
            return documents, bool(creates)
        raise AssertionError("unreachable")

    async def _existing_documents(
        self, named: dict[str, tuple[int, str]]
    ) -> dict[int, dict[str, Any]]:
        """For a batch: the items (by index) whose id exists with the same body, and their
        documents; an id that exists with another body is a ``Conflict`` naming its item."""
        if not named:
            return {}
        rows = await Workflow.filter(id__in=list(named)).values_list("id", "request_hash")
        conflicts = [
            FieldError(
                f"workflows[{named[str(wid)][0]}].id",
                f"workflow '{public_id(str(wid))}' already exists with a different request body",
            )
            for wid, request_hash in rows
            if request_hash != named[str(wid)][1]
        ]
        if conflicts:
            conflicts.sort(key=lambda e: e.path)
            raise Conflict(
                f"{len(conflicts)} workflow(s) of the batch exist with a different request "
                "body; nothing was stored",
                conflicts,
            )
        found: dict[int, dict[str, Any]] = {}
        for wid, _ in rows:
            document = await load_status_document(str(wid))
            if document is not None:
                found[named[str(wid)][0]] = document
        return found


def _started(
    create: NewWorkflow,
) -> tuple[SimpleNamespace, list[SimpleNamespace], Machine, Graph]:
    """A new workflow's rows, a machine over them that has been started, its graph."""
    spec, workflow_id = create.spec, create.workflow_id
    now = utcnow()
    delayed = create.start_at is not None
    deps = {s.id: list(s.depends_on) for s in spec.steps}
    dependents = dag.dependents_of(deps)
    workflow = SimpleNamespace(
        id=workflow_id,
        name=spec.name,
        status=WorkflowStatus.PENDING if delayed else WorkflowStatus.RUNNING,
        context=spec.context,
        saga=spec.saga,
        fail_fast=spec.fail_fast,
        timeout=spec.timeout,
        on_complete=spec.on_complete,
        on_error=spec.on_error,
        namespace=namespace_of(workflow_id),
        created_at=now,
        started_at=None if delayed else now,
        completed_at=None,
        # Counted from the start: a delayed workflow gets its deadline when it begins.
        deadline_at=None if delayed else now + timedelta(seconds=spec.timeout),
        error=None,
        request_hash=create.request_hash,
        idempotency_key=create.idempotency_key,
        open_steps=len(spec.steps),
        step_count=len(spec.steps),
        failed_step=None,
        end_reason=None,
        compensation_started=False,
        completions=0,
        previous_steps=spec.previous_steps,
        reopened=0,
        start_at=create.start_at,
        schedule_id=create.schedule_id,
        scheduled_at=create.scheduled_at,
    )
    rows = [
        SimpleNamespace(
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
            continue_on_failure=s.failure_policy is OnFailure.IGNORE,
            on_failure=s.failure_policy,
            started_at=None,
            completed_at=None,
            completion_seq=None,
            result=None,
            error=None,
            compensation_status=None,
            run_id=new_run_id(),
        )
        for position, s in enumerate(spec.steps)
    ]
    machine = Machine(
        workflow_state(workflow),
        {r.step_id: step_state(r, None) for r in rows},
        graph=deps,
        now=now,
        new_run_id=new_run_id,
        all_loaded=True,
        verdicts=create.verdicts,
    )
    machine.start(start_at=create.start_at)
    return workflow, rows, machine, Graph(deps, dependents)
