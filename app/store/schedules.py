"""Schedules: stored, replaced, paused, triggered, and fired — each tick exactly once.

A schedule is one row (``schedules``) holding its spec and its state: the next tick
(``next_run_at``), when it fires (``next_fire_at``, the tick plus its jitter), the
fires counted, a buffered tick. APScheduler only wakes processes up
(``app.sweeper``); what a tick does is decided here, from the database.

Firing a schedule is one transaction: the schedule's row is locked (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL, so a second process skips a schedule another is
firing; SQLite has one writer), its due ticks are worked out by
``app.schedules.advance``, and the workflows fired, the runs recorded and the new
state are written together — a fire and the workflow it creates commit or roll
back as one.

What makes a tick fire **once** is not the lock but two unique keys: the run row
(schedule, tick) and the workflow id ``{scheduleId}-{YYYYMMDDTHHMMSSZ}``. Whoever
inserts them first — a firing pass of any process, or a trigger in the same
second — has fired that tick; anyone else finds the key taken (or, racing, has
its transaction refused by the database) and fires nothing. The schedule's own
row is updated only if it still holds the version, fire count and next tick the
pass read (``TransitionRejected`` otherwise: the pass runs again).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app.conditions import Verdict
from app.engine import TERMINAL_WORKFLOW_STATUSES, WorkflowStatus, iso
from app.errors import Conflict, NotFound
from app.machine import ActionRefused
from app.models import Schedule, ScheduleRun, Workflow
from app.schedules import (
    RECENT_RUNS,
    Advance,
    Cadence,
    Overlap,
    Run,
    RunOutcome,
    ScheduleState,
    advance,
    cron_of,
    recorded,
    tick_workflow_id,
    time_zone,
    trigger_tick,
)
from app.schemas import ScheduleSpec, WorkflowCreate, canonical_json
from app.store.creating import Creating, NewWorkflow
from app.store.reading import load_status_document
from app.store.render import status_document
from app.store.rows import utcnow
from app.store.sql import (
    TransitionRejected,
    Where,
    database_unavailable,
    fetch,
    insert_many,
    retry_transaction,
    supports_for_update,
    update_many,
)
from app.store.work import Handoff
from app.tenants import DEFAULT_NAMESPACE, public_id, scoped_id

log = logging.getLogger("baton.schedules")

SCHEDULE_LIST_DEFAULT = 50
SCHEDULE_LIST_MAX = 500
#: Schedules one firing pass looks at (the rest: the next pass, a moment later).
DUE_BATCH = 100
#: Parsed ``workflow`` bodies kept per process, by (schedule, version).
SPEC_CACHE = 256
#: Workflow statuses that count as open for the overlap policies.
OPEN_STATUSES = tuple(str(s.value) for s in WorkflowStatus if s not in TERMINAL_WORKFLOW_STATUSES)

_STATE_COLUMNS = (
    "id",
    "namespace",
    "cron",
    "every",
    "timezone",
    "start_at",
    "end_at",
    "fire_limit",
    "overlap",
    "catchup_window",
    "jitter",
    "paused",
    "fired_count",
    "next_run_at",
    "next_fire_at",
    "buffered_at",
    "version",
)


@dataclass
class FireReport:
    """What a firing pass did, for the sweeper's log and wake-ups."""

    #: Outcomes recorded, by outcome (fired, skipped, missed, buffered).
    outcomes: Counter[str] = field(default_factory=Counter)
    #: Step requests were made due (the dispatcher should look).
    made_due: bool = False


def cadence_of(row: Any) -> Cadence:
    """A stored (or requested) schedule's cadence."""
    return Cadence(
        cron=cron_of(row.cron) if row.cron else None,
        every=int(row.every) if row.every is not None else None,
        zone=time_zone(row.timezone),
        start_at=row.start_at,
        end_at=row.end_at,
    )


def state_of(row: Any) -> ScheduleState:
    return ScheduleState(
        cadence=cadence_of(row),
        overlap=Overlap(row.overlap),
        catchup_window=row.catchup_window,
        jitter=row.jitter,
        limit=row.fire_limit,
        fired_count=row.fired_count,
        next_run_at=row.next_run_at,
        next_fire_at=row.next_fire_at,
        buffered_at=row.buffered_at,
    )


def _state_fields(state: ScheduleState) -> dict[str, Any]:
    return {
        "fired_count": state.fired_count,
        "next_run_at": state.next_run_at,
        "next_fire_at": state.next_fire_at,
        "buffered_at": state.buffered_at,
    }


def _guard(row: Any) -> dict[str, Any]:
    """What a write to a schedule row expects it to still hold."""
    return {"version": row.version, "fired_count": row.fired_count, "next_run_at": row.next_run_at}


def encode_schedule_cursor(schedule_id: str) -> str:
    return base64.urlsafe_b64encode(schedule_id.encode()).decode().rstrip("=")


def decode_schedule_cursor(cursor: str) -> str:
    """The schedule id a cursor stands for; ValueError if it was not made here."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = base64.urlsafe_b64decode(padded.encode("ascii")).decode()
    except (ValueError, UnicodeError) as exc:
        raise ValueError("invalid cursor") from exc
    if not value or len(value) > 110 or not value.isprintable():
        raise ValueError("invalid cursor")
    return value


class Schedules(Creating):
    """The schedule store role: PUT, read, list, delete, pause, resume, trigger, fire."""

    def __init__(self, *, owner: str | None = None) -> None:
        super().__init__(owner=owner)
        #: Outcomes of ticks this process recorded, by outcome (for metrics).
        self.schedule_tally: Counter[str] = Counter()
        self._specs: OrderedDict[tuple[str, int], tuple[WorkflowCreate, dict[str, Verdict]]] = (
            OrderedDict()
        )
        #: The random source of jitter (tests replace it).
        self.rand: Callable[[], float] = random.random

    # ----------------------------------------------------------------- managing

    async def put_schedule(
        self,
        schedule_id: str,
        spec: ScheduleSpec,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        now: datetime | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Create or replace a schedule (scoped id); answers (document, created).

        A replaced schedule keeps its fire count and its runs; its next tick is the
        first one after now (a tick it already fired is never fired again: its keys
        are taken), and a tick it had buffered is recorded as skipped.
        """
        scoped = scoped_id(namespace, schedule_id)
        now = now or utcnow()

        async def put() -> bool:
            async with in_transaction():
                rows = await self._lock(scoped, wait=True)
                values = {
                    "cron": spec.cron.strip() if spec.cron else None,
                    "every": spec.every,
                    "timezone": spec.timezone,
                    "start_at": spec.start_at,
                    "end_at": spec.end_at,
                    "fire_limit": spec.limit,
                    "overlap": spec.overlap,
                    "catchup_window": spec.catchup_window,
                    "jitter": spec.jitter,
                    "paused": spec.paused,
                    "note": spec.note,
                    "workflow": spec.workflow,
                    "updated_at": now,
                }
                fired = rows[0].fired_count if rows else 0
                state = ScheduleState(
                    cadence_of(SimpleNamespace(**values)),
                    Overlap(spec.overlap),
                    spec.catchup_window,
                    spec.jitter,
                    spec.limit,
                    fired,
                    None,
                    None,
                )
                fields = _state_fields(state if spec.paused else state.first_tick(now, self.rand))
                if not rows:
                    await insert_many(
                        Schedule,
                        [
                            {
                                "id": scoped,
                                "namespace": namespace,
                                **values,
                                **fields,
                                "created_at": now,
                                "last_run_at": None,
                                "version": 0,
                            }
                        ],
                    )
                    return True
                row = rows[0]
                await self._unbuffer(row)
                await update_many(
                    Schedule,
                    [
                        (
                            {"id": scoped},
                            _guard(row),
                            {**values, **fields, "version": row.version + 1},
                        )
                    ],
                )
                return False

        try:
            created = await retry_transaction(put)
        except IntegrityError:
            # Another PUT created it meanwhile: this one replaces it.
            created = await retry_transaction(put)
        document = await self.get_schedule(scoped)
        assert document is not None
        return document, created

    async def _unbuffer(self, row: Any) -> None:
        """A buffered tick that will not fire any more (replaced, paused) is a skip."""
        if row.buffered_at is not None:
            await ScheduleRun.filter(
                schedule_id=row.id, scheduled_at=row.buffered_at, outcome=RunOutcome.BUFFERED
            ).update(outcome=RunOutcome.SKIPPED)

    async def get_schedule(self, schedule_id: str) -> dict[str, Any] | None:
        """The schedule document of DESIGN §8 (scoped id), or None."""
        row = await Schedule.get_or_none(id=schedule_id)
        if row is None:
            return None
        runs = await self._recent_runs([row.id])
        return schedule_document(row, runs.get(row.id, []))

    async def list_schedules(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        limit: int = SCHEDULE_LIST_DEFAULT,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The namespace's schedules by id, a page at a time."""
        query = Schedule.filter(namespace=namespace)
        if cursor:
            query = query.filter(id__gt=scoped_id(namespace, decode_schedule_cursor(cursor)))
        rows = await query.order_by("id").limit(limit + 1)
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_schedule_cursor(public_id(rows[-1].id))
        runs = await self._recent_runs([r.id for r in rows])
        return [schedule_document(r, runs.get(r.id, [])) for r in rows], next_cursor

    async def _recent_runs(self, schedule_ids: Sequence[str]) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        if not schedule_ids:
            return found
        for run in await ScheduleRun.filter(schedule_id__in=list(schedule_ids)).order_by(
            "-scheduled_at"
        ):
            kept = found.setdefault(run.schedule_id, [])  # type: ignore[attr-defined]
            if len(kept) < RECENT_RUNS:
                kept.append(run)
        return found

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule and its runs (its workflows stay); False if there is none."""
        async with in_transaction():
            return bool(await Schedule.filter(id=schedule_id).delete())

    async def pause_schedule(self, schedule_id: str, note: str | None) -> dict[str, Any]:
        """Stop firing (no tick is due while paused; none is caught up on resume)."""
        return await self._set_paused(schedule_id, True, note)

    async def resume_schedule(self, schedule_id: str, note: str | None) -> dict[str, Any]:
        """Fire again from the first tick after now."""
        return await self._set_paused(schedule_id, False, note)

    async def _set_paused(self, schedule_id: str, paused: bool, note: str | None) -> dict[str, Any]:
        async def act() -> None:
            async with in_transaction():
                rows = await self._lock(schedule_id, wait=True)
                if not rows:
                    raise NotFound(f"no schedule '{public_id(schedule_id)}'")
                row = rows[0]
                if row.paused == paused:
                    if note is not None:
                        await Schedule.filter(id=schedule_id).update(note=note)
                    return
                state = state_of(row)
                if paused:
                    await self._unbuffer(row)
                    fields = _state_fields(
                        replace(state, next_run_at=None, next_fire_at=None, buffered_at=None)
                    )
                else:
                    fields = _state_fields(state.first_tick(utcnow(), self.rand))
                await update_many(
                    Schedule,
                    [
                        (
                            {"id": schedule_id},
                            _guard(row),
                            {
                                **fields,
                                "paused": paused,
                                "note": note,
                                "updated_at": utcnow(),
                                "version": row.version + 1,
                            },
                        )
                    ],
                )

        await retry_transaction(act)
        document = await self.get_schedule(schedule_id)
        assert document is not None
        return document

    async def _lock(self, schedule_id: str, *, wait: bool) -> list[SimpleNamespace]:
        """The schedule's row, locked (``wait=False``: skipped if another holds it).

        ``FOR NO KEY UPDATE`` (a schedule's id never changes): firers, triggers and
        replaces exclude each other, but a run row inserted meanwhile (its foreign key
        takes a key-share lock on the schedule) is not held up — nor does it hide the
        schedule from a firer, whose insert of the same tick then meets the unique key.
        """
        suffix = ""
        if supports_for_update():
            suffix = " FOR NO KEY UPDATE" if wait else " FOR NO KEY UPDATE SKIP LOCKED"
        return await fetch(Schedule, _STATE_COLUMNS, Where(Schedule).eq("id", schedule_id), suffix)

    # ----------------------------------------------------------------- firing

    async def trigger_schedule(
        self, schedule_id: str, *, now: datetime | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Fire a schedule now, once (paused or not, whatever its overlap policy): answers
        the workflow's status document and whether it was created.

        The tick is the current second: a trigger in a second the schedule already fired
        answers that workflow. ``Conflict`` if that second's tick was skipped or missed
        (trigger again), or the schedule has fired its ``limit``.
        """
        now = now or utcnow()
        tick = trigger_tick(now)
        spec, verdicts = await self._fired_spec(schedule_id)

        async def fire() -> tuple[dict[str, Any], bool]:
            async with in_transaction():
                rows = await self._lock(schedule_id, wait=True)
                if not rows:
                    raise NotFound(f"no schedule '{public_id(schedule_id)}'")
                row = rows[0]
                taken = await ScheduleRun.get_or_none(schedule_id=schedule_id, scheduled_at=tick)
                if taken is not None:
                    return await self._answer_taken(taken), False
                if row.fire_limit is not None and row.fired_count >= row.fire_limit:
                    raise Conflict(
                        f"schedule '{public_id(schedule_id)}' has fired its limit "
                        f"({row.fire_limit})"
                    )
                workflow_id = scoped_id(
                    row.namespace, tick_workflow_id(public_id(schedule_id), tick)
                )
                prepared = await self._fire_workflows(row, spec, verdicts, [tick])
                await insert_many(
                    ScheduleRun,
                    [_run_row(schedule_id, Run(tick, RunOutcome.FIRED), workflow_id, now)],
                )
                await update_many(
                    Schedule,
                    [
                        (
                            {"id": schedule_id},
                            _guard(row),
                            {"fired_count": row.fired_count + 1, "last_run_at": now},
                        )
                    ],
                )
                await self._prune(schedule_id)
            self.schedule_tally[RunOutcome.FIRED] += 1
            workflow, steps = prepared[0]
            return status_document(workflow, steps), True

        try:
            return await retry_transaction(fire)
        except IntegrityError:
            # Another process fired this second's tick meanwhile: answer its workflow.
            taken = await ScheduleRun.get_or_none(schedule_id=schedule_id, scheduled_at=tick)
            if taken is None:
                raise
            return await self._answer_taken(taken), False

    async def _answer_taken(self, run: ScheduleRun) -> dict[str, Any]:
        if run.workflow_id is not None:
            document = await load_status_document(run.workflow_id)
            if document is not None:
                return document
        raise Conflict(
            f"this second's tick ({iso(run.scheduled_at)}) was recorded as {run.outcome}; "
            "trigger again"
        )

    async def fire_due_schedules(
        self, *, now: datetime | None = None, limit: int = DUE_BATCH
    ) -> FireReport:
        """Fire every schedule whose tick has come (and buffered ticks whose previous
        workflow has ended): one transaction per schedule."""
        now = now or utcnow()
        report = FireReport()
        where = Where(Schedule).eq("paused", False)
        where.parts.append(f'("next_fire_at" <= {where.param(now)} OR "buffered_at" IS NOT NULL)')
        due = await fetch(Schedule, ("id",), where, f' ORDER BY "next_fire_at" LIMIT {int(limit)}')
        for row in due:
            try:
                await self._fire_schedule(row.id, now, report)
            except (NotFound, TransitionRejected):
                continue  # deleted meanwhile, or lost races all along: the next pass
            except Exception as exc:
                if database_unavailable(exc):
                    raise  # nothing will fire now: the sweep logs it once
                # One schedule that cannot fire must not hold up the others.
                log.exception(
                    "schedule %s could not fire; trying again at the next tick",
                    public_id(row.id),
                )
        return report

    async def _fire_schedule(self, schedule_id: str, now: datetime, report: FireReport) -> None:
        try:
            spec, verdicts = await self._fired_spec(schedule_id)
        except NotFound:
            return
        for attempt in range(3):
            try:
                outcome = await retry_transaction(
                    lambda: self._fire_once(schedule_id, now, spec, verdicts)
                )
            except IntegrityError:
                # A key was taken meanwhile (another process or a trigger fired a tick
                # this pass meant to): run it again, now seeing the key.
                if attempt == 2:
                    raise
                continue
            if outcome is not None:
                report.outcomes.update(outcome.outcomes)
                report.made_due |= outcome.made_due
                self.schedule_tally.update(outcome.outcomes)
            return

    async def _fire_once(
        self,
        schedule_id: str,
        now: datetime,
        spec: WorkflowCreate,
        verdicts: dict[str, Verdict],
    ) -> FireReport | None:
        async with in_transaction():
            rows = await self._lock(schedule_id, wait=False)
            if not rows or rows[0].paused:
                return None  # another process is firing it (or it was paused, deleted)
            row = rows[0]
            open_ids = [
                str(w)
                for w in await Workflow.filter(
                    schedule_id=schedule_id, status__in=OPEN_STATUSES
                ).values_list("id", flat=True)
            ]
            plan = advance(state_of(row), now=now, open_workflows=len(open_ids), rand=self.rand)
            assert plan.state is not None
            unchanged = _state_fields(plan.state) == _state_fields(state_of(row))
            if not plan.runs and plan.fire_buffered is None and unchanged:
                return None
            if plan.cancel_open:
                await self._cancel_open(open_ids)
            fires, runs = await self._untaken(schedule_id, row.namespace, plan)
            if plan.fire_buffered is not None:
                fires.insert(0, plan.fire_buffered)
            report = FireReport()
            if fires:
                await self._fire_workflows(row, spec, verdicts, fires)
                report.made_due = True
            workflow_of = {
                tick: scoped_id(row.namespace, tick_workflow_id(public_id(schedule_id), tick))
                for tick in fires
            }
            kept = recorded(runs)
            await insert_many(
                ScheduleRun,
                [
                    _run_row(schedule_id, run, workflow_of.get(run.scheduled_at), now)
                    for run in kept
                ],
            )
            if plan.fire_buffered is not None:
                updated = await ScheduleRun.filter(
                    schedule_id=schedule_id, scheduled_at=plan.fire_buffered
                ).update(
                    outcome=RunOutcome.FIRED,
                    fired_at=now,
                    workflow_id=workflow_of[plan.fire_buffered],
                )
                if not updated:
                    await insert_many(
                        ScheduleRun,
                        [
                            _run_row(
                                schedule_id,
                                Run(plan.fire_buffered, RunOutcome.FIRED),
                                workflow_of[plan.fire_buffered],
                                now,
                            )
                        ],
                    )
            changes = _state_fields(plan.state)
            # Ticks whose keys another took fired nothing here: not counted here either.
            changes["fired_count"] = row.fired_count + len(fires)
            if fires:
                changes["last_run_at"] = now
            await update_many(Schedule, [({"id": schedule_id}, _guard(row), changes)])
            await self._prune(schedule_id)
            report.outcomes.update(run.outcome.value for run in runs)
            if plan.fire_buffered is not None:
                report.outcomes[RunOutcome.FIRED] += 1
            return report

    async def _untaken(
        self, schedule_id: str, namespace: str, plan: Advance
    ) -> tuple[list[datetime], list[Run]]:
        """The ticks to fire and the runs to record, without the ticks whose keys are
        taken already (fired by a trigger, by another process) — and a fire whose
        workflow id some create took is recorded as skipped."""
        ticks = [run.scheduled_at for run in plan.runs]
        taken: set[datetime] = set()
        if ticks:
            taken = {
                r.scheduled_at
                for r in await fetch(
                    ScheduleRun,
                    ("scheduled_at",),
                    Where(ScheduleRun).eq("schedule_id", schedule_id).isin("scheduled_at", ticks),
                )
            }
        fires = [t for t in plan.fire if t not in taken]
        ids = {scoped_id(namespace, tick_workflow_id(public_id(schedule_id), t)): t for t in fires}
        clashes: set[datetime] = set()
        if ids:
            clashes = {
                ids[str(w)]
                for w in await Workflow.filter(id__in=list(ids)).values_list("id", flat=True)
            }
            for tick in sorted(clashes):
                log.warning(
                    "schedule %s: workflow %s exists already (created by hand?); tick skipped",
                    public_id(schedule_id),
                    public_id(tick_workflow_id(schedule_id, tick)),
                )
        runs = [
            Run(r.scheduled_at, RunOutcome.SKIPPED) if r.scheduled_at in clashes else r
            for r in plan.runs
            if r.scheduled_at not in taken
        ]
        return [t for t in fires if t not in clashes], runs

    async def _cancel_open(self, workflow_ids: Iterable[str]) -> None:
        """``cancel_previous``: cancel the schedule's open workflows, in this transaction."""
        sessions = await self._sessions(dict.fromkeys(workflow_ids))
        acting = []
        for session in sessions.values():
            try:
                session.machine.cancel(compensate=False)
            except ActionRefused:
                continue  # compensating already: it is ending
            acting.append(session)
        if acting:
            await self._run_all(acting)

    async def _fire_workflows(
        self,
        row: Any,
        spec: WorkflowCreate,
        verdicts: dict[str, Verdict],
        ticks: Sequence[datetime],
    ) -> list[tuple[SimpleNamespace, list[SimpleNamespace]]]:
        """Insert the workflows of ``ticks`` (in the caller's transaction)."""
        creates = []
        for tick in ticks:
            public = tick_workflow_id(public_id(row.id), tick)
            body = canonical_json(
                {**spec.model_dump(by_alias=True, exclude_none=True), "id": public}
            )
            creates.append(
                NewWorkflow(
                    spec.model_copy(update={"id": public}),
                    scoped_id(row.namespace, public),
                    hashlib.sha256(body).hexdigest(),
                    None,
                    Handoff(0, 0.0),
                    verdicts,
                    schedule_id=row.id,
                    scheduled_at=tick,
                )
            )
        prepared = await self._insert_workflows(creates)
        return [(workflow, steps) for workflow, steps, _ in prepared]

    async def _fired_spec(self, schedule_id: str) -> tuple[WorkflowCreate, dict[str, Verdict]]:
        """The schedule's ``workflow`` as a create, and the verdicts of the conditions
        its start decides (decided outside any transaction), per version."""
        found = await Schedule.filter(id=schedule_id).values_list("version", "workflow")
        if not found:
            raise NotFound(f"no schedule '{public_id(schedule_id)}'")
        version, body = found[0]
        key = (schedule_id, int(version))
        cached = self._specs.get(key)
        if cached is None:
            spec = WorkflowCreate.model_validate(body, by_alias=True, by_name=False)
            verdicts = await self._start_verdicts(spec, schedule_id)
            cached = self._specs[key] = (spec, verdicts)
            while len(self._specs) > SPEC_CACHE:
                self._specs.popitem(last=False)
        self._specs.move_to_end(key)
        return cached

    async def _prune(self, schedule_id: str) -> None:
        """Keep the newest ``RECENT_RUNS`` runs of a schedule (and any buffered one)."""
        keep = (
            await ScheduleRun.filter(schedule_id=schedule_id)
            .order_by("-scheduled_at")
            .offset(RECENT_RUNS)
            .limit(1)
            .values_list("scheduled_at", flat=True)
        )
        if keep:
            await (
                ScheduleRun.filter(schedule_id=schedule_id, scheduled_at__lte=keep[0])
                .exclude(outcome=RunOutcome.BUFFERED)
                .delete()
            )

    async def next_schedule_fire_at(self) -> datetime | None:
        """When the next tick of any active schedule fires."""
        value = (
            await Schedule.filter(paused=False)
            .exclude(next_fire_at=None)
            .order_by("next_fire_at")
            .first()
            .values_list("next_fire_at", flat=True)
        )
        return value if isinstance(value, datetime) else None


def _run_row(schedule_id: str, run: Run, workflow_id: str | None, now: datetime) -> dict[str, Any]:
    fired = run.outcome is RunOutcome.FIRED
    return {
        "schedule_id": schedule_id,
        "scheduled_at": run.scheduled_at,
        "fired_at": now if fired else None,
        "workflow_id": workflow_id if fired else None,
        "outcome": run.outcome.value,
    }


def schedule_document(row: Schedule, runs: Sequence[Any]) -> dict[str, Any]:
    """A schedule row and its recent runs as the API's document (DESIGN §8)."""
    return {
        "id": public_id(row.id),
        "cron": row.cron,
        "every": row.every,
        "timezone": row.timezone,
        "startAt": iso(row.start_at),
        "endAt": iso(row.end_at),
        "limit": row.fire_limit,
        "overlap": row.overlap,
        "catchupWindow": row.catchup_window,
        "jitter": row.jitter,
        "paused": row.paused,
        "note": row.note,
        "workflow": row.workflow,
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
        "nextRunAt": None if row.paused else iso(row.next_run_at),
        "lastRunAt": iso(row.last_run_at),
        "firedCount": row.fired_count,
        "recentRuns": [
            {
                "scheduledAt": iso(run.scheduled_at),
                "firedAt": iso(run.fired_at),
                "workflowId": public_id(run.workflow_id) if run.workflow_id else None,
                "outcome": run.outcome,
            }
            for run in runs
        ],
    }
