"""The core of the store: sessions that lock a workflow, load it, run its machine, write.

Every state change of a workflow goes through a *session*: the workflow's row is
locked (``FOR UPDATE`` on PostgreSQL; on SQLite the transaction holds the
database's write lock from its BEGIN), the steps the machine needs are loaded —
a few at first, more when it asks (``Need``) — the machine runs, and its effects
are gathered in ``Writes`` and written in a handful of statements for any
number of workflows: conditional updates that carry the state they expect, and
bulk inserts. The role modules (creating, claiming, settling, actions) all
build on ``StoreCore``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any, NamedTuple

import orjson

from app import dag
from app.engine import (
    SETTLED_STEP_STATUSES,
    TERMINAL_WORKFLOW_STATUSES,
    DeliveryKind,
    ancestor_state,
    previous_steps,
)
from app.machine import Effects, Machine, NewEvent, StepState
from app.models import Delivery, Event, Step, Workflow
from app.store.graphs import Graph, GraphCache
from app.store.rows import (
    DELIVERY_VIEW_COLUMNS,
    STEP_STATE_COLUMNS,
    WORKFLOW_STATE_COLUMNS,
    json_value,
    message_id,
    new_run_id,
    step_request,
    step_state,
    utcnow,
    workflow_state,
)
from app.store.sql import (
    Where,
    delete_many,
    fetch,
    insert_many,
    insert_returning,
    notify_due,
    supports_for_update,
    update_many,
)
from app.store.work import Handoff
from app.verdicts import ConditionEvaluator

log = logging.getLogger("baton.store")


class StepGuard(NamedTuple):
    """What a step row held when it was read: a write to it is conditional on all of it."""

    status: str
    attempts: int
    run_id: str


#: A delivery row to delete if it still holds the attempt it was read with: (id, attempt).
Finished = tuple[int, int]


@dataclass(slots=True)
class Session:
    """A machine over one locked workflow, and what each loaded step held when read."""

    machine: Machine
    loaded: dict[str, StepGuard]
    #: Delivery rows whose answers were settled, deleted together when the session ends.
    finished: list[Finished] = field(default_factory=list)


@dataclass(slots=True)
class Writes:
    """What one transaction writes, gathered from every machine it ran, written at once.

    A batch of answers from many workflows costs a handful of statements, not a
    handful per workflow.
    """

    #: Delivery rows whose answers were settled.
    finished: list[Finished] = field(default_factory=list)
    #: (workflow, step, attempt, lease owner): step request rows to drop, as they were read.
    drops: list[tuple[str, str, int, str | None]] = field(default_factory=list)
    #: ((workflow, step), what it held when loaded, fields to write).
    steps: list[tuple[tuple[str, str], StepGuard, dict[str, Any]]] = field(default_factory=list)
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Step requests claimed as they were made due: (machine, step ids, due time, the
    #: budget they were claimed in, whose caller sends them).
    handed: list[tuple[Machine, list[str], float, Handoff]] = field(default_factory=list)
    #: The hand-off budgets of the machines collected (told when requests are left due).
    budgets: list[Handoff] = field(default_factory=list)


@dataclass(slots=True)
class Tx:
    """Events one claim transaction accumulates before writing them in bulk."""

    events: list[dict[str, Any]] = field(default_factory=list)
    now: datetime = field(default_factory=utcnow)
    #: Workflows found past their deadline while claiming.
    expired: set[str] = field(default_factory=set)
    skipped: list[int] = field(default_factory=list)

    def event(self, workflow_id: str, type_: str, step_id: str | None = None, **data: Any) -> None:
        self.events.append(
            {
                "workflow_id": workflow_id,
                "step_id": step_id,
                "type": type_,
                "at": self.now,
                "data": data,
            }
        )


@dataclass(frozen=True, slots=True)
class Ancestry:
    """A question to ``_ancestry``: what ``previousSteps`` holds for these steps."""

    workflow_id: str
    step_ids: Sequence[str]
    #: States the caller holds already (a machine's loaded steps).
    known: Mapping[str, StepState] | None
    #: The workflow's ``previousSteps`` mode: ``ancestors`` or ``parents``.
    mode: str
    #: The workflow's ``reopened`` count (which cached states are still good).
    reopened: int


#: Per step, the step ids its previousSteps holds; and their states.
AncestryAnswer = tuple[dict[str, list[str]], dict[str, dict[str, Any]]]


class StoreCore:
    """What every part of the store shares: this process's identity, its graph cache,
    its event tally, and the session machinery."""

    def __init__(self, *, owner: str | None = None) -> None:
        #: Identifies this process in leases.
        self.owner = owner or f"baton-{uuid.uuid4().hex[:12]}"
        #: Decides `when` conditions in a worker process, started on first use.
        self.conditions = ConditionEvaluator()
        self.graphs = GraphCache()
        #: Events written by this process, by type (for metrics). A transaction that
        #: loses a race and runs again is counted once per run.
        self.event_tally: Counter[str] = Counter()

    async def _session(self, workflow_id: str, step_ids: Sequence[str] | None) -> Session | None:
        """Lock the workflow and load it (with ``step_ids``, or every step when None)."""
        return (await self._sessions({workflow_id: step_ids})).get(workflow_id)

    async def _sessions(self, wanted: Mapping[str, Iterable[str] | None]) -> dict[str, Session]:
        """Lock workflows (in id order) and load the given steps of each (every step
        for None), in one query per table for all of them."""
        workflows = await fetch(
            Workflow,
            WORKFLOW_STATE_COLUMNS,
            Where(Workflow).isin("id", sorted(wanted)),
            " ORDER BY id FOR UPDATE" if supports_for_update() else "",
        )
        loaded: dict[str, dict[str, StepGuard]] = {w.id: {} for w in workflows}
        states = await self._load_many({w.id: (loaded[w.id], wanted[w.id]) for w in workflows})
        now = utcnow()
        sessions: dict[str, Session] = {}
        for workflow in workflows:
            machine = Machine(
                workflow_state(workflow),
                states.get(workflow.id, {}),
                graph=(await self.graphs.get(workflow.id)).depends_on,
                now=now,
                new_run_id=new_run_id,
                all_loaded=wanted[workflow.id] is None,
            )
            sessions[workflow.id] = Session(machine, loaded[workflow.id])
        return sessions

    async def _load_many(
        self, wanted: Mapping[str, tuple[dict[str, StepGuard], Iterable[str] | None]]
    ) -> dict[str, dict[str, StepState]]:
        """Steps of several workflows (given ids, or all with None) with their step
        requests, in one query per table; steps already in ``loaded`` are skipped, and
        each one read is added there with what it held."""
        groups: dict[str, list[str] | None] = {}
        for workflow_id, (loaded, step_ids) in wanted.items():
            if step_ids is None:
                groups[workflow_id] = None
            else:
                ids = sorted({i for i in step_ids if i not in loaded})
                if ids:
                    groups[workflow_id] = ids
        if not groups:
            return {}
        step_requests: dict[tuple[str, str], SimpleNamespace] = {}
        for d in await fetch(
            Delivery,
            DELIVERY_VIEW_COLUMNS,
            Where(Delivery).groups("workflow_id", "step_id", groups).eq("kind", DeliveryKind.STEP),
        ):
            step_requests[(d.workflow_id, d.step_id or "")] = d
        found: dict[str, dict[str, StepState]] = {}
        for row in await fetch(
            Step, STEP_STATE_COLUMNS, Where(Step).groups("workflow_id", "step_id", groups)
        ):
            workflow_id = row.workflow_id
            loaded = wanted[workflow_id][0]
            if row.step_id in loaded:
                continue
            loaded[row.step_id] = StepGuard(row.status, row.attempts, row.run_id)
            found.setdefault(workflow_id, {})[row.step_id] = step_state(
                row, step_requests.get((workflow_id, row.step_id))
            )
        return found

    async def _run(
        self,
        machine: Machine,
        loaded: dict[str, StepGuard],
        finished: Sequence[Finished] = (),
        budget: Handoff | None = None,
    ) -> list[dict[str, Any]]:
        """Run one machine to the end, loading what it asks for, then write its effects."""
        return await self._run_all([Session(machine, loaded, list(finished))], budget)

    async def _run_all(
        self,
        sessions: Sequence[Session],
        budget: Handoff | None = None,
        writes: Writes | None = None,
    ) -> list[dict[str, Any]]:
        """Run machines to the end, loading what they ask for (one query per table for
        all of them, round by round), then write their effects.

        With ``writes``, the effects are only collected there, for the caller to write
        with the rest of its transaction.
        """
        pending = list(sessions)
        while pending:
            needs = {}
            for session in pending:
                need = session.machine.run()
                if need is not None:
                    needs[session.machine.workflow.id] = (session, need)
            if not needs:
                break
            states = await self._load_many(
                {
                    workflow_id: (session.loaded, None if need.all_steps else need.step_ids)
                    for workflow_id, (session, need) in needs.items()
                }
            )
            checks = [(s, c) for s, need in needs.values() for c in need.conditions]
            verdicts = await self.conditions.decide([c for _, c in checks]) if checks else []
            for (session, check), verdict in zip(checks, verdicts, strict=True):
                session.machine.provide_verdicts({check.step_id: verdict})
            for workflow_id, (session, need) in needs.items():
                session.machine.provide(
                    states.get(workflow_id, {}).values(), all_steps=need.all_steps
                )
            pending = [session for session, _ in needs.values()]
        batch = writes if writes is not None else Writes()
        rows: list[dict[str, Any]] = []
        for session in sessions:
            batch.finished.extend(session.finished)
            rows.extend(self._collect(session.machine, session.loaded, budget, batch))
        if writes is None:
            await self._write(batch)
        return rows

    def _collect(
        self,
        machine: Machine,
        loaded: dict[str, StepGuard],
        budget: Handoff | None,
        writes: Writes,
    ) -> list[dict[str, Any]]:
        """Turn the machine's effects into rows and conditional updates (not yet written)."""
        effects = machine.effects
        workflow_id = machine.workflow.id
        handed: list[str] = []
        if budget is not None and budget.remaining > 0:
            for d in effects.deliveries:
                if len(handed) == budget.remaining:
                    break
                if d.kind is DeliveryKind.STEP and d.step_id is not None:
                    # Claimed here: attempt 1 starts now, as a claim would record it.
                    handed.append(d.step_id)
                    effects.steps.setdefault(d.step_id, {})["attempts"] = 1
                    machine.steps[d.step_id].attempts = 1
                    effects.events.append(NewEvent("step.started", d.step_id, {"attempt": 1}))
            budget.remaining -= len(handed)
        for step_id, changes in effects.steps.items():
            fields = {k: (json_value(v) if k == "result" else v) for k, v in changes.items()}
            guard = loaded[step_id]
            writes.steps.append(((workflow_id, step_id), guard, fields))
            # A later write in the same transaction expects what this one leaves.
            loaded[step_id] = StepGuard(
                str(changes.get("status", guard.status)),
                changes.get("attempts", guard.attempts),
                changes.get("run_id", guard.run_id),
            )
        if effects.workflow:
            fields = dict(effects.workflow)
            if "status" in fields and fields["status"] in TERMINAL_WORKFLOW_STATUSES:
                fields.setdefault("completed_at", machine.now)
            fields["compensation_started"] = machine.workflow.compensation_started
            writes.workflows.setdefault(workflow_id, {}).update(fields)
        writes.drops.extend(
            (workflow_id, d.step_id, d.attempt, d.lease_owner) for d in effects.drops
        )
        now = time.time()
        handed_set = set(handed)
        rows = []
        for d in effects.deliveries:
            mine = d.kind is DeliveryKind.STEP and d.step_id in handed_set
            rows.append(
                {
                    "workflow_id": workflow_id,
                    "step_id": d.step_id,
                    "kind": d.kind,
                    "attempt": 1,
                    "message_id": message_id(workflow_id, d.step_id, d.kind, d.run_id),
                    "due_at": now,
                    "url": d.url,
                    "payload": d.payload,
                    "claimed": mine,
                    "awaiting": False,
                    "lease_owner": self.owner if mine else None,
                    "lease_until": now + budget.lease_seconds if mine and budget else None,
                }
            )
        writes.deliveries.extend(rows)
        if effects.events:
            self.event_tally.update(e.type for e in effects.events)
            for e in effects.events:
                log_event(workflow_id, e.type, e.step_id, e.data)
                writes.events.append(
                    {
                        "workflow_id": workflow_id,
                        "step_id": e.step_id,
                        "type": e.type,
                        "at": machine.now,
                        "data": e.data,
                    }
                )
        if budget is not None:
            if all(b is not budget for b in writes.budgets):
                writes.budgets.append(budget)
            if handed:
                writes.handed.append((machine, handed, now, budget))
        machine.effects = Effects()
        return rows

    async def _write(self, writes: Writes) -> None:
        """Write what ``_collect`` gathered: a few statements for any number of workflows."""
        # Every write carries what it expects; one that misses means the row moved on
        # since it was read (TransitionRejected: the transaction runs again).
        if writes.finished:
            await delete_many(
                Delivery, [({"id": i}, {"attempt": attempt}) for i, attempt in writes.finished]
            )
        if writes.drops:
            await delete_many(
                Delivery,
                [
                    (
                        {"workflow_id": w, "step_id": s, "kind": DeliveryKind.STEP},
                        {"attempt": attempt, "lease_owner": owner},
                    )
                    for w, s, attempt, owner in writes.drops
                ],
            )
        if writes.steps:
            await update_many(
                Step,
                [
                    ({"workflow_id": w, "step_id": s}, guard._asdict(), fields)
                    for (w, s), guard, fields in writes.steps
                ],
            )
        if writes.workflows:
            await update_many(
                Workflow, [({"id": w}, {}, fields) for w, fields in writes.workflows.items()]
            )
        ids: dict[tuple[str, str], int] = {}
        if writes.deliveries:
            mine = [d for d in writes.deliveries if d["lease_owner"] is not None]
            others = [d for d in writes.deliveries if d["lease_owner"] is None]
            # The requests handed off are inserted answering their ids (the requests need
            # them); the rest in one executemany.
            for d in await insert_returning(Delivery, mine, ("id", "workflow_id", "step_id")):
                ids[(d["workflow_id"], d["step_id"])] = d["id"]
            await insert_many(Delivery, others)
            if others:
                await notify_due()
                for budget in writes.budgets:
                    budget.left_due = True
        if writes.events:
            await insert_many(Event, writes.events)
        if writes.handed:
            await self._handoff_requests(writes.handed, ids)

    async def _handoff_requests(
        self,
        handed: Sequence[tuple[Machine, list[str], float, Handoff]],
        ids: Mapping[tuple[str, str], int],
    ) -> None:
        """Jobs for step requests this transaction claimed as it made them due, each
        added to the budget it was claimed in."""
        lines = await self._ancestry(
            [
                Ancestry(
                    m.workflow.id, steps, m.steps, m.workflow.previous_steps, m.workflow.reopened
                )
                for m, steps, _, _ in handed
            ]
        )
        for machine, step_ids, due_at, budget in handed:
            workflow_id = machine.workflow.id
            ancestry, states = lines[workflow_id]
            for step_id in step_ids:
                step = machine.steps[step_id]
                budget.requests.append(
                    step_request(
                        ids[(workflow_id, step_id)],
                        machine.workflow,
                        step,
                        kind=DeliveryKind.STEP,
                        attempt=1,
                        message_id=message_id(workflow_id, step_id, DeliveryKind.STEP, step.run_id),
                        url=step.url,
                        previous=previous_steps(ancestry[step_id], states),
                        due_at=due_at,
                    )
                )

    async def _ancestry(self, asked: Sequence[Ancestry]) -> dict[str, AncestryAnswer]:
        """Per workflow: the steps each step's ``previousSteps`` holds — its transitive
        ancestors, or with ``parents`` only its direct dependencies — and their states.

        States the caller already holds (a machine's loaded steps) are used as they
        are; settled ones this process read before come from the graph cache; the rest
        are read in one query for every workflow asked about.
        """
        answer: dict[str, AncestryAnswer] = {}
        missing: dict[str, list[str]] = {}
        graphs: dict[str, Graph] = {}
        for ask in asked:
            entry = graphs[ask.workflow_id] = await self.graphs.get(ask.workflow_id)
            if ask.mode == "parents":
                lines = {s: list(entry.depends_on[s]) for s in ask.step_ids}
            else:
                lines = {
                    s: dag.ancestors(s, entry.depends_on, entry.positions) for s in ask.step_ids
                }
            known = ask.known or {}
            cached = self.graphs.settled(entry, ask.reopened)
            states: dict[str, dict[str, Any]] = {}
            unread: set[str] = set()
            for line in lines.values():
                for step_id in line:
                    if step_id in states:
                        continue
                    step = known.get(step_id)
                    if step is not None:
                        states[step_id] = ancestor_state(
                            step.status.value, step.result, step.error, step.on_failure
                        )
                    elif step_id in cached:
                        states[step_id] = cached[step_id]
                    else:
                        unread.add(step_id)
            if unread:
                missing[ask.workflow_id] = sorted(unread)
            answer[ask.workflow_id] = (lines, states)
        if missing:
            for row in await fetch(
                Step,
                ("workflow_id", "step_id", "status", "result", "error", "on_failure"),
                Where(Step).groups("workflow_id", "step_id", missing),
                raw=("result", "error"),
            ):
                result, result_size = _json_column(row.result)
                error, error_size = _json_column(row.error)
                state = ancestor_state(row.status, result, error, row.on_failure)
                answer[row.workflow_id][1][row.step_id] = state
                if row.status in SETTLED_STEP_STATUSES:
                    self.graphs.keep_settled(
                        graphs[row.workflow_id], row.step_id, state, result_size + error_size
                    )
        return answer

    async def _flush(self, tx: Tx) -> None:
        if tx.events:
            self.event_tally.update(e["type"] for e in tx.events)
            await insert_many(Event, tx.events)


def _json_column(value: Any) -> tuple[Any, int]:
    """A JSON column read raw: its value, and the length of its JSON text."""
    if value is None:
        return None, 0
    if isinstance(value, str | bytes):
        return orjson.loads(value), len(value)
    return value, len(orjson.dumps(value))


#: Events worth a line at info level; every other event is logged at debug.
_NOTABLE_EVENTS = frozenset(
    {
        "workflow.completed",
        "workflow.failed",
        "workflow.cancelled",
        "workflow.compensating",
        "workflow.compensated",
        "workflow.compensation_failed",
        "step.failed",
        "compensation.failed",
        "callback.failed",
    }
)
_event_log = logging.getLogger("baton.events")


def log_event(workflow_id: str, type_: str, step_id: str | None, data: Any) -> None:
    level = logging.INFO if type_ in _NOTABLE_EVENTS else logging.DEBUG
    if _event_log.isEnabledFor(level):
        _event_log.log(
            level,
            "%s %s%s",
            type_,
            workflow_id,
            f"/{step_id}" if step_id else "",
            extra={"workflow_id": workflow_id, "step_id": step_id, "event": type_, "data": data},
        )
