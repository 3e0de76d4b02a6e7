"""The workflow state machine: every transition of DESIGN §5, as a pure computation.

A ``Machine`` holds a view of one workflow and the steps loaded so far. Inputs
(an attempt finished, cancel, timeout, retry, …) queue tasks; ``run()`` works
through them and records *effects* — step and workflow changes, events,
deliveries to add, drop or reschedule — that the store then writes as
conditional updates in one transaction.

The machine never asks for the whole DAG when a little will do: when a task
needs steps that are not loaded it stops and says which (``Need``); the store
loads them and calls ``run()`` again. It asks for the verdicts of `when`
conditions the same way (``Need.conditions``): deciding one may take seconds
and gigabytes, so the store has them decided in a worker process
(app/verdicts.py). A machine given an ``evaluate`` function decides them
itself instead (unit tests do). Settling one step loads that step and its
direct dependents; only whole-workflow transitions (fail-fast, cancel, timeout,
finishing, compensation planning) load every step, once.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from app import dag
from app.conditions import ConditionCheck, Verdict
from app.engine import (
    AttemptDecision,
    AttemptResult,
    DeliveryKind,
    OnFailure,
    RetryPolicy,
    StepError,
    StepErrorCode,
    StepStatus,
    WorkflowErrorCode,
    WorkflowStatus,
    ancestor_state,
    callback_kind_for,
    decide_after_attempt,
    dooms_workflow,
    iso,
    previous_steps,
    satisfies_dependents,
    starts_dependents_at_once,
    workflow_error,
)
from app.tenants import public_id


class CompensationStatus(enum.StrEnum):
    PENDING = "pending"  #: due, waiting for its turn
    RUNNING = "running"  #: request in flight
    COMPLETED = "completed"  #: undone
    FAILED = "failed"  #: failed for good


@dataclass(slots=True)
class DeliveryView:
    """What the machine needs to know of a step's outstanding delivery."""

    kind: DeliveryKind
    attempt: int
    #: A request is (or may be) on the wire: claimed under a lease, not awaiting a callback.
    in_flight: bool
    awaiting: bool = False
    #: Who held the row's lease when it was read (None: nobody). A drop of the row is
    #: conditional on it: a claim committed meanwhile makes the drop miss.
    lease_owner: str | None = None


@dataclass(slots=True)
class StepState:
    step_id: str
    status: StepStatus
    depends_on: list[str]
    dependents: list[str]
    deps_remaining: int
    url: str
    run_id: str
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 300.0
    #: What failing for good does to its dependents (``continueOnFailure`` is ``ignore``).
    on_failure: OnFailure = OnFailure.FAIL
    condition: str | None = None
    compensation: str | None = None
    attempts: int = 0
    completion_seq: int | None = None
    compensation_status: str | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    position: int = 0
    delivery: DeliveryView | None = None


@dataclass(slots=True)
class WorkflowState:
    id: str
    name: str | None
    status: WorkflowStatus
    context: Any
    fail_fast: bool
    saga: bool
    failed_step: str | None
    open_steps: int
    step_count: int
    timeout: float = 86400.0
    end_reason: WorkflowErrorCode | None = None
    on_complete: str | None = None
    on_error: str | None = None
    error: dict[str, Any] | None = None
    #: Compensation has been planned for the current failure.
    compensation_started: bool = False
    #: Steps completed so far; the next completion is number ``completions + 1``.
    completions: int = 0
    #: What step requests' ``previousSteps`` hold: ``ancestors`` or ``parents``.
    previous_steps: str = "ancestors"
    #: How many times steps were re-opened (settled states cached before are stale).
    reopened: int = 0
    #: The schedule that fired the workflow (scoped id) and its tick: step requests say so.
    schedule_id: str | None = None
    scheduled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Need:
    """Steps the machine must see, or verdicts it must have, before it can go on."""

    step_ids: frozenset[str] = frozenset()
    all_steps: bool = False
    #: `when` conditions to decide (``provide_verdicts``): every ready step's at once.
    conditions: tuple[ConditionCheck, ...] = ()


@dataclass(frozen=True, slots=True)
class NewDelivery:
    kind: DeliveryKind
    step_id: str | None
    url: str
    run_id: str
    payload: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DropDeliveries:
    """Delete a step's request row — only if it is still as it was read: the same
    attempt, leased by the same owner (or by nobody)."""

    step_id: str
    attempt: int
    lease_owner: str | None


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: str
    step_id: str | None
    data: dict[str, Any]


class ActionRefused(Exception):
    """The action does not apply to the workflow as it stands (answered as 409)."""


@dataclass(slots=True)
class Effects:
    """Everything one run of the machine decided, in the order it was decided."""

    #: step id -> fields to write (conditional on the status the step was loaded with).
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    workflow: dict[str, Any] = field(default_factory=dict)
    events: list[NewEvent] = field(default_factory=list)
    deliveries: list[NewDelivery] = field(default_factory=list)
    drops: list[DropDeliveries] = field(default_factory=list)


class TaskKind(enum.Enum):
    """What the machine has queued to do next (``Machine.run`` works through them)."""

    READY = "ready"  #: a step's dependencies are settled: run, skip or fail it
    PROPAGATE = "propagate"  #: a step settled: count down (or cancel) its dependents
    CANCEL_OPEN = "cancel_open"  #: nothing new starts: cancel what has not been sent
    FINISH = "finish"  #: look whether the workflow is done, and how it ended
    PLAN_COMPENSATION = "plan_compensation"  #: saga: owe the compensations, in order
    NEXT_COMPENSATION = "next_compensation"  #: saga: send the next one, or finish
    RETRY_FAILED = "retry_failed"  #: `POST …/retry`: reopen what failed
    RETRY_FROM = "retry_from"  #: `POST …/steps/{id}/retry`: reopen a step and downstream
    RESUME_COMPENSATION = "resume_compensation"  #: retry a failed compensation
    END = "end"  #: move the workflow to ``Task.status``
    CALLBACK = "callback"  #: owe the ``Task.callback`` request


@dataclass(frozen=True, slots=True)
class Task:
    kind: TaskKind
    #: The step of READY, PROPAGATE and RETRY_FROM.
    step_id: str | None = None
    #: The terminal status of END.
    status: WorkflowStatus | None = None
    #: The callback kind of CALLBACK.
    callback: DeliveryKind | None = None


#: Tasks that look at the whole workflow: every step must be loaded first.
_WHOLE_WORKFLOW_TASKS = frozenset(
    {
        TaskKind.CANCEL_OPEN,
        TaskKind.PLAN_COMPENSATION,
        TaskKind.NEXT_COMPENSATION,
        TaskKind.CALLBACK,
        TaskKind.RETRY_FAILED,
        TaskKind.RETRY_FROM,
        TaskKind.RESUME_COMPENSATION,
        TaskKind.END,
    }
)


class Machine:
    """Transitions for one workflow. Not thread-safe; one per transaction."""

    def __init__(
        self,
        workflow: WorkflowState,
        steps: Mapping[str, StepState],
        *,
        graph: Mapping[str, list[str]],
        now: datetime,
        new_run_id: Callable[[], str],
        all_loaded: bool = False,
        evaluate: Callable[[ConditionCheck], Verdict] | None = None,
        verdicts: Mapping[str, Verdict] | None = None,
    ) -> None:
        self.workflow = workflow
        self.steps: dict[str, StepState] = dict(steps)
        self.graph = graph
        self.now = now
        self._new_run_id = new_run_id
        self.all_loaded = all_loaded
        self.effects = Effects()
        self._queue: deque[Task] = deque()
        self._settled = 0
        self._compensation_run: str | None = None
        #: Decides a condition in place; without it, verdicts are asked for (``Need``).
        self._evaluate = evaluate
        #: Verdicts provided, by step id, each used by the step's next READY.
        self._verdicts: dict[str, Verdict] = dict(verdicts or {})

    # ----------------------------------------------------------------- loading

    def provide(self, steps: Iterable[StepState], *, all_steps: bool = False) -> None:
        for step in steps:
            self.steps.setdefault(step.step_id, step)
        if all_steps:
            self.all_loaded = True

    def provide_verdicts(self, verdicts: Mapping[str, Verdict]) -> None:
        """The verdicts of conditions asked for in ``Need.conditions``, by step id."""
        self._verdicts.update(verdicts)

    def run(self) -> Need | None:
        """Work through queued tasks; stop with a Need when data is missing, else None."""
        while self._queue:
            task = self._queue[0]
            need = self._needs(task)
            if need is not None:
                return need
            self._queue.popleft()
            self._perform(task)
        return None

    def _needs(self, task: Task) -> Need | None:
        kind, step_id = task.kind, task.step_id
        if kind in _WHOLE_WORKFLOW_TASKS:
            return None if self.all_loaded else Need(all_steps=True)
        if kind is TaskKind.FINISH:
            if self._will_finish() and not self.all_loaded:
                return Need(all_steps=True)
            return None
        assert step_id is not None
        if kind is TaskKind.PROPAGATE:
            missing = {d for d in self.steps[step_id].dependents if d not in self.steps}
        elif kind is TaskKind.READY:
            step = self.steps[step_id]
            if not step.condition:
                return None
            missing = {a for a in dag.ancestors(step_id, self.graph) if a not in self.steps}
            if not missing and self._wants_verdict(step):
                return Need(conditions=tuple(self._condition_checks()))
        else:
            missing = set()
        return Need(step_ids=frozenset(missing)) if missing else None

    def _wants_verdict(self, step: StepState) -> bool:
        """Whether READY must have the verdict of ``step``'s condition, and has none."""
        return (
            self._evaluate is None
            and step.condition is not None
            and step.status is StepStatus.PENDING
            and self.may_start
            and step.step_id not in self._verdicts
        )

    def _condition_checks(self) -> list[ConditionCheck]:
        """The conditions of every queued READY step that wants a verdict and can have one
        (its ancestors are loaded): asked for together, they are decided in one batch."""
        checks: list[ConditionCheck] = []
        asked: set[str] = set()
        for task in self._queue:
            if task.kind is not TaskKind.READY or task.step_id in asked:
                continue
            step = self.steps.get(task.step_id or "")
            if step is None or not self._wants_verdict(step):
                continue
            ancestors = dag.ancestors(step.step_id, self.graph)
            if all(a in self.steps for a in ancestors):
                asked.add(step.step_id)
                checks.append(self._condition_check(step, ancestors))
        return checks

    def _condition_check(self, step: StepState, ancestors: list[str]) -> ConditionCheck:
        states = {
            a: ancestor_state(s.status.value, s.result, s.error, s.on_failure)
            for a in ancestors
            if (s := self.steps.get(a)) is not None
        }
        return ConditionCheck(
            step.step_id,
            step.condition or "",
            self.workflow.context,
            previous_steps(ancestors, states),
        )

    # ----------------------------------------------------------------- inputs

    def start(self, *, start_at: datetime | None = None) -> None:
        """A new workflow: its roots are ready; with ``start_at`` (delayed start) it stays
        ``pending``, nothing sent, until ``begin()`` at that time."""
        data: dict[str, Any] = {"name": self.workflow.name, "steps": self.workflow.step_count}
        if start_at is not None:
            data["startAt"] = iso(start_at)
        self.event("workflow.created", None, **data)
        if start_at is not None:
            return
        self.event("workflow.started", None)
        self._ready_roots()

    def begin(self) -> bool:
        """A delayed workflow's start time came: it runs from now, its timeout counting
        from now. False when it is no longer ``pending`` (cancelled, or begun already)."""
        w = self.workflow
        if w.status is not WorkflowStatus.PENDING or w.end_reason is not None:
            return False
        w.status = WorkflowStatus.RUNNING
        self._workflow(
            status=WorkflowStatus.RUNNING,
            started_at=self.now,
            deadline_at=self.now + timedelta(seconds=w.timeout),
        )
        self.event("workflow.started", None)
        self._ready_roots()
        return True

    def _ready_roots(self) -> None:
        for step in sorted(self.steps.values(), key=lambda s: s.position):
            if not step.depends_on:
                self._queue.append(Task(TaskKind.READY, step.step_id))
        self._queue.append(Task(TaskKind.FINISH))

    def attempt_finished(
        self,
        step_id: str,
        attempt: int,
        result: AttemptResult,
        *,
        rand: Callable[[], float] | None = None,
    ) -> AttemptDecision | None:
        """A step's attempt came back (or its async deadline passed).

        Answers the decision (so the store can reschedule or drop the delivery), or
        None when the answer is late or duplicate and changes nothing.
        """
        step = self.steps[step_id]
        if step.status is not StepStatus.RUNNING or attempt != step.attempts:
            return None  # late or duplicate answer: recorded in the attempt log only
        decision = decide_after_attempt(
            result, attempt, step.policy, may_retry=self.may_start, rand=rand
        )
        error = decision.error.to_dict() if decision.error else None
        if decision.status is StepStatus.COMPLETED:
            self._settle(step, StepStatus.COMPLETED, result=decision.result)
        elif decision.status is StepStatus.RUNNING:
            if self.workflow.status is not WorkflowStatus.RUNNING or self.workflow.end_reason:
                self._cancel_step(step, "the workflow is no longer running")
        elif decision.status is StepStatus.RETRYING:
            self.event("step.failed", step_id, attempt=attempt, error=error)
            self._set(step, status=StepStatus.RETRYING, error=error)
            self.event(
                "step.retrying",
                step_id,
                attempt=attempt + 1,
                delay=round(decision.retry_in or 0.0, 3),
            )
        else:
            self.event("step.failed", step_id, attempt=attempt, error=error)
            self._settle(step, StepStatus.FAILED, error=error)
        self._queue.append(Task(TaskKind.FINISH))
        return decision

    def compensation_finished(
        self,
        step_id: str,
        attempt: int,
        result: AttemptResult,
        *,
        rand: Callable[[], float] | None = None,
    ) -> AttemptDecision | None:
        """A compensation request came back; it is retried with its step's policy."""
        step = self.steps[step_id]
        if step.compensation_status != CompensationStatus.RUNNING:
            return None
        decision = decide_after_attempt(result, attempt, step.policy, rand=rand)
        if decision.status in (StepStatus.COMPLETED, StepStatus.RUNNING):
            self._set(step, compensation_status=CompensationStatus.COMPLETED)
            self.event("compensation.completed", step_id)
            self._queue.append(Task(TaskKind.NEXT_COMPENSATION))
        elif decision.status is StepStatus.FAILED:
            error = decision.error.to_dict() if decision.error else None
            self._set(step, compensation_status=CompensationStatus.FAILED)
            self.event("compensation.failed", step_id, attempt=attempt, error=error)
            self._end(WorkflowStatus.COMPENSATION_FAILED)
        return decision

    def cancel(self, *, compensate: bool) -> None:
        """Cancel through the API: nothing new starts; in-flight answers start nothing."""
        if self.workflow.status not in (WorkflowStatus.PENDING, WorkflowStatus.RUNNING):
            raise ActionRefused(
                f"workflow '{public_id(self.workflow.id)}' is {self.workflow.status}"
            )
        self.workflow.end_reason = WorkflowErrorCode.CANCELLED
        error = workflow_error(WorkflowErrorCode.CANCELLED, None)
        self.workflow.error = error
        self._workflow(end_reason=WorkflowErrorCode.CANCELLED.value, error=error)
        if compensate:
            self._workflow(status=WorkflowStatus.COMPENSATING)
            self.workflow.status = WorkflowStatus.COMPENSATING
            self.event("workflow.compensating", None, reason="cancelled")
            self._queue.append(Task(TaskKind.CANCEL_OPEN))
            self._queue.append(Task(TaskKind.FINISH))
        else:
            # Cancelled from now on; the event and callback follow the step cancellations.
            self.workflow.status = WorkflowStatus.CANCELLED
            self._queue.append(Task(TaskKind.CANCEL_OPEN))
            self._queue.append(Task(TaskKind.END, status=WorkflowStatus.CANCELLED))

    def timeout(self) -> None:
        """The workflow's deadline passed: like a failure of the whole workflow."""
        if self.workflow.status is not WorkflowStatus.RUNNING or self.workflow.end_reason:
            return
        self.workflow.end_reason = WorkflowErrorCode.WORKFLOW_TIMEOUT
        self._workflow(end_reason=WorkflowErrorCode.WORKFLOW_TIMEOUT.value)
        self._queue.append(Task(TaskKind.CANCEL_OPEN))
        self._queue.append(Task(TaskKind.FINISH))

    def retry_workflow(self) -> None:
        """`POST …/retry`: re-run what failed (or resume a failed compensation)."""
        status = self.workflow.status
        if status is WorkflowStatus.COMPENSATION_FAILED:
            self._queue.append(Task(TaskKind.RESUME_COMPENSATION))
            return
        if status is not WorkflowStatus.FAILED:
            raise ActionRefused(
                f"workflow '{public_id(self.workflow.id)}' is {status}; only failed or "
                "compensation_failed workflows can be retried"
            )
        self._queue.append(Task(TaskKind.RETRY_FAILED))

    def retry_step(self, step_id: str) -> None:
        """`POST …/steps/{id}/retry`: re-run the step and everything downstream of it."""
        step = self.steps[step_id]
        if self.workflow.status is WorkflowStatus.PENDING:
            raise ActionRefused(
                f"workflow '{public_id(self.workflow.id)}' is pending (a delayed start); "
                "its steps run once it starts"
            )
        if step.status in (StepStatus.RUNNING, StepStatus.RETRYING):
            raise ActionRefused(f"step '{step_id}' is {step.status}; retry it once it has settled")
        if self.workflow.status in (
            WorkflowStatus.COMPENSATING,
            WorkflowStatus.COMPENSATED,
            WorkflowStatus.COMPENSATION_FAILED,
        ):
            raise ActionRefused(
                f"workflow '{public_id(self.workflow.id)}' is {self.workflow.status}; "
                "steps of a compensated workflow cannot be re-run"
            )
        self._queue.append(Task(TaskKind.RETRY_FROM, step_id))

    # ----------------------------------------------------------------- tasks

    def _perform(self, task: Task) -> None:
        kind = task.kind
        if kind is TaskKind.READY:
            self._ready(self.steps[_required(task.step_id)])
        elif kind is TaskKind.PROPAGATE:
            self._propagate(self.steps[_required(task.step_id)])
        elif kind is TaskKind.CANCEL_OPEN:
            self._cancel_open()
        elif kind is TaskKind.FINISH:
            self._finish()
        elif kind is TaskKind.PLAN_COMPENSATION:
            self._plan_compensation()
        elif kind is TaskKind.NEXT_COMPENSATION:
            self._next_compensation()
        elif kind is TaskKind.RETRY_FAILED:
            self._retry_failed()
        elif kind is TaskKind.RETRY_FROM:
            self._retry_from(_required(task.step_id))
        elif kind is TaskKind.RESUME_COMPENSATION:
            self._resume_compensation()
        elif kind is TaskKind.END:
            self._end(_required(task.status))
        else:
            self._callback(_required(task.callback))

    @property
    def may_start(self) -> bool:
        """New steps may start: running, not cancelled or timed out, not doomed under failFast."""
        w = self.workflow
        return (
            w.status is WorkflowStatus.RUNNING
            and w.end_reason is None
            and not (w.failed_step is not None and w.fail_fast)
        )

    def _ready(self, step: StepState) -> None:
        if step.status is not StepStatus.PENDING:
            return
        if not self.may_start:
            self._cancel_step(step, "the workflow is no longer running")
            return
        if step.condition:
            verdict = self._verdicts.pop(step.step_id, None)
            if verdict is None:
                assert self._evaluate is not None, "READY ran without the verdict it needs"
                check = self._condition_check(step, dag.ancestors(step.step_id, self.graph))
                verdict = self._evaluate(check)
            if verdict is False:
                self._settle(step, StepStatus.SKIPPED)
                return
            if isinstance(verdict, str):
                error = StepError(StepErrorCode.CONDITION_ERROR, verdict).to_dict()
                self.event("step.failed", step.step_id, attempt=0, error=error)
                self._settle(step, StepStatus.FAILED, error=error)
                return
        self._set(
            step,
            status=StepStatus.RUNNING,
            started_at=self.now,
            completed_at=None,
            attempts=0,
            result=None,
            error=None,
        )
        self.effects.deliveries.append(
            NewDelivery(DeliveryKind.STEP, step.step_id, step.url, step.run_id)
        )

    def _settle(
        self,
        step: StepState,
        status: StepStatus,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Move a step to a settled status and queue what follows from it."""
        changes: dict[str, Any] = {"status": status, "completed_at": self.now}
        if status is StepStatus.COMPLETED:
            # Numbered under the workflow's lock: reverse completion order never
            # depends on which process settled a step or what its clock said.
            self.workflow.completions += 1
            self._workflow(completions=self.workflow.completions)
            changes.update(result=result, error=None, completion_seq=self.workflow.completions)
            self.event("step.completed", step.step_id, attempt=step.attempts or None)
        elif status is StepStatus.SKIPPED:
            self.event("step.skipped", step.step_id)
        elif status is StepStatus.CANCELLED:
            self.event("step.cancelled", step.step_id, reason=(error or {}).get("message"))
        if error is not None:
            changes["error"] = error
        self._set(step, **changes)
        self._settled += 1
        self.workflow.open_steps -= 1
        self._workflow(open_steps=self.workflow.open_steps)
        if self.workflow.open_steps == 0:
            # Whatever closed the last open step (an answer, a cascade of cancels or
            # skips), the workflow must be looked at once more.
            self._queue.append(Task(TaskKind.FINISH))
        if dooms_workflow(status, step.on_failure) and self.workflow.failed_step is None:
            self.workflow.failed_step = step.step_id
            self._workflow(failed_step=step.step_id)
            if self.workflow.fail_fast:
                self._queue.append(Task(TaskKind.CANCEL_OPEN))
        if step.dependents:
            self._queue.append(Task(TaskKind.PROPAGATE, step.step_id))

    def _cancel_step(self, step: StepState, reason: str) -> None:
        delivery = step.delivery
        if delivery is not None:
            self.effects.drops.append(
                DropDeliveries(step.step_id, delivery.attempt, delivery.lease_owner)
            )
            step.delivery = None
        self._settle(
            step,
            StepStatus.CANCELLED,
            error=StepError(StepErrorCode.CANCELLED, reason).to_dict(),
        )

    def _propagate(self, step: StepState) -> None:
        satisfied = satisfies_dependents(step.status, step.on_failure)
        # onFailure "continue": its dependents go now, whatever their other dependencies;
        # those settle later without starting them again (they are no longer pending).
        at_once = starts_dependents_at_once(step.status, step.on_failure)
        for dependent_id in step.dependents:
            dependent = self.steps[dependent_id]
            if dependent.status is not StepStatus.PENDING:
                continue
            if not satisfied:
                self._cancel_step(dependent, f"dependency '{step.step_id}' {step.status}")
                continue
            dependent.deps_remaining -= 1
            self._set(dependent, deps_remaining=dependent.deps_remaining)
            if dependent.deps_remaining <= 0 or at_once:
                self._queue.append(Task(TaskKind.READY, dependent_id))

    def _cancel_open(self) -> None:
        """Nothing new starts: pending, retrying and not-yet-sent steps are cancelled.

        A request already on the wire is left to finish: its answer is recorded but
        starts nothing. An async step awaiting its callback is cancelled only by a
        cancel or a timeout, not by another step's failure (its work is under way).
        """
        hard = self.workflow.end_reason is not None
        reason = {
            WorkflowErrorCode.CANCELLED: "the workflow was cancelled",
            WorkflowErrorCode.WORKFLOW_TIMEOUT: "the workflow timed out",
        }.get(self.workflow.end_reason or WorkflowErrorCode.STEP_FAILED)
        if reason is None:
            reason = f"step '{self.workflow.failed_step}' failed"
        for step in sorted(self.steps.values(), key=lambda s: s.position):
            if step.status in (StepStatus.PENDING, StepStatus.RETRYING):
                self._cancel_step(step, reason)
            elif step.status is StepStatus.RUNNING:
                delivery = step.delivery
                queued = delivery is None or not (delivery.in_flight or delivery.awaiting)
                if queued or (hard and delivery is not None and delivery.awaiting):
                    self._cancel_step(step, reason)

    def _will_finish(self) -> bool:
        w = self.workflow
        if w.open_steps > 0:
            return False
        if w.status is WorkflowStatus.RUNNING:
            return True
        return w.status is WorkflowStatus.COMPENSATING and not w.compensation_started

    def _finish(self) -> None:
        w = self.workflow
        if not self._will_finish():
            return
        if w.status is WorkflowStatus.COMPENSATING:
            w.compensation_started = True
            self._queue.append(Task(TaskKind.PLAN_COMPENSATION))
            return
        if w.failed_step is None and w.end_reason is None:
            self._end(WorkflowStatus.COMPLETED)
            return
        if w.end_reason is WorkflowErrorCode.WORKFLOW_TIMEOUT:
            error = workflow_error(WorkflowErrorCode.WORKFLOW_TIMEOUT, None)
        else:
            failed = self.steps.get(w.failed_step or "")
            error = workflow_error(
                WorkflowErrorCode.STEP_FAILED, w.failed_step, failed.error if failed else None
            )
        self._workflow(error=error)
        w.error = error
        if w.saga and self._compensable():
            w.status = WorkflowStatus.COMPENSATING
            self._workflow(status=WorkflowStatus.COMPENSATING)
            self.event("workflow.compensating", None, error=error)
            w.compensation_started = True
            self._queue.append(Task(TaskKind.PLAN_COMPENSATION))
        else:
            self._end(WorkflowStatus.FAILED)

    def _compensable(self) -> list[StepState]:
        """Completed steps with a compensation URL, in reverse completion order."""
        steps = [
            s for s in self.steps.values() if s.status is StepStatus.COMPLETED and s.compensation
        ]
        return sorted(steps, key=lambda s: (s.completion_seq or 0, s.position), reverse=True)

    def _plan_compensation(self) -> None:
        w = self.workflow
        w.compensation_started = True
        plan = self._compensable()
        if not plan:
            cancelled = w.end_reason is WorkflowErrorCode.CANCELLED
            self._end(WorkflowStatus.CANCELLED if cancelled else WorkflowStatus.FAILED)
            return
        for step in plan:
            self._set(step, compensation_status=CompensationStatus.PENDING)
        self._next_compensation()

    def _next_compensation(self) -> None:
        """Send the next pending compensation, one at a time; all done means compensated."""
        pending = [
            s for s in self._compensable() if s.compensation_status == CompensationStatus.PENDING
        ]
        if not pending:
            self._end(WorkflowStatus.COMPENSATED)
            return
        step = pending[0]
        assert step.compensation is not None
        # A compensation re-sent by a manual retry is a new run: a new webhook-id.
        run_id = self._compensation_run or step.run_id
        self._compensation_run = None
        self.effects.deliveries.append(
            NewDelivery(DeliveryKind.COMPENSATION, step.step_id, step.compensation, run_id)
        )

    def _resume_compensation(self) -> None:
        w = self.workflow
        self._compensation_run = self._new_run_id()
        for step in self.steps.values():
            if step.compensation_status == CompensationStatus.FAILED:
                self._set(step, compensation_status=CompensationStatus.PENDING)
        w.status = WorkflowStatus.COMPENSATING
        w.compensation_started = True
        self._workflow(status=WorkflowStatus.COMPENSATING, completed_at=None)
        self.event("workflow.compensating", None, retry=True)
        self._next_compensation()

    def _retry_failed(self) -> None:
        reset = [
            s
            for s in self.steps.values()
            if s.status is StepStatus.CANCELLED
            or (s.status is StepStatus.FAILED and s.on_failure is OnFailure.FAIL)
        ]
        self._reopen({s.step_id for s in reset})

    def _retry_from(self, step_id: str) -> None:
        targets = {step_id, *dag.descendants(step_id, dag.dependents_of(self.graph))}
        busy = [
            t for t in targets if self.steps[t].status in (StepStatus.RUNNING, StepStatus.RETRYING)
        ]
        if busy:
            raise ActionRefused(f"step '{busy[0]}' downstream of '{step_id}' is still running")
        self._reopen(targets)

    def _reopen(self, targets: set[str]) -> None:
        """Put ``targets`` back to pending with new runs and run the workflow again."""
        w = self.workflow
        settled = [t for t in targets if self.steps[t].status is not StepStatus.PENDING]
        for step_id in sorted(targets, key=lambda t: self.steps[t].position):
            step = self.steps[step_id]
            step.run_id = self._new_run_id()
            self._verdicts.pop(step_id, None)
            self._set(
                step,
                status=StepStatus.PENDING,
                attempts=0,
                result=None,
                error=None,
                started_at=None,
                completed_at=None,
                completion_seq=None,
                compensation_status=None,
                run_id=step.run_id,
            )
        if w.failed_step in targets:
            w.failed_step = None
        w.open_steps += len(settled)
        w.reopened += 1
        w.end_reason = None
        w.error = None
        w.compensation_started = False
        restarted = w.status is not WorkflowStatus.RUNNING
        w.status = WorkflowStatus.RUNNING
        if restarted:
            # A re-run gets the workflow's whole timeout again.
            self._workflow(deadline_at=self.now + timedelta(seconds=w.timeout))
        self._workflow(
            status=WorkflowStatus.RUNNING,
            failed_step=w.failed_step,
            open_steps=w.open_steps,
            reopened=w.reopened,
            end_reason=None,
            error=None,
            completed_at=None,
        )
        if restarted:
            self.event("workflow.started", None, retry=True, steps=sorted(targets))
        # Count each reset step's dependencies afresh; one that can never run is cancelled.
        for step_id in sorted(targets, key=lambda t: self.steps[t].position):
            step = self.steps[step_id]
            remaining = 0
            blocked = None
            for dep_id in step.depends_on:
                dep = self.steps[dep_id]
                if dep_id in targets or dep.status not in (
                    StepStatus.COMPLETED,
                    StepStatus.SKIPPED,
                    StepStatus.FAILED,
                    StepStatus.CANCELLED,
                ):
                    remaining += 1
                elif not satisfies_dependents(dep.status, dep.on_failure):
                    blocked = dep
            step.deps_remaining = remaining
            self._set(step, deps_remaining=remaining)
            if blocked is not None and remaining == 0:
                self._cancel_step(step, f"dependency '{blocked.step_id}' {blocked.status}")
            elif remaining == 0:
                self._queue.append(Task(TaskKind.READY, step_id))
        self._queue.append(Task(TaskKind.FINISH))

    def _end(self, status: WorkflowStatus) -> None:
        """Move the workflow to a terminal status and owe its callback."""
        w = self.workflow
        w.status = status
        self._workflow(status=status, completed_at=self.now)
        self.event(f"workflow.{status.value}", None, error=w.error)
        kind = callback_kind_for(status)
        url = w.on_complete if kind is DeliveryKind.ON_COMPLETE else w.on_error
        if kind is None or not url:
            return
        self._queue.append(Task(TaskKind.CALLBACK, callback=kind))

    def _callback(self, kind: DeliveryKind) -> None:
        """Owe the onComplete / onError request, its body fixed now (DESIGN §4)."""
        w = self.workflow
        url = w.on_complete if kind is DeliveryKind.ON_COMPLETE else w.on_error
        assert url is not None
        lists = outcome_lists(self.steps.values())
        payload = {
            "workflowId": public_id(w.id),
            "workflowName": w.name,
            "status": w.status.value,
            "context": w.context,
            "results": lists["results"],
            "completedSteps": lists["completedSteps"],
            "failedSteps": lists["failedSteps"],
            "skippedSteps": lists["skippedSteps"],
            "error": w.error,
            "completedAt": iso(self.now),
        }
        self.effects.deliveries.append(
            NewDelivery(kind, None, url, self._new_run_id(), payload=payload)
        )

    # ----------------------------------------------------------------- recording

    def event(self, type_: str, step_id: str | None, **data: Any) -> None:
        self.effects.events.append(NewEvent(type_, step_id, data))

    def _set(self, step: StepState, **changes: Any) -> None:
        for key, value in changes.items():
            if hasattr(step, key):
                setattr(step, key, value)
        self.effects.steps.setdefault(step.step_id, {}).update(changes)

    def _workflow(self, **changes: Any) -> None:
        self.effects.workflow.update(changes)


def outcome_lists(steps: Iterable[StepState]) -> dict[str, Any]:
    """The step-id lists and results of a status document, from step states."""
    ordered = sorted(steps, key=lambda s: s.position)
    completed = sorted(
        (s for s in ordered if s.status is StepStatus.COMPLETED),
        key=lambda s: (s.completion_seq or 0, s.position),
    )
    return {
        "currentSteps": [
            s.step_id for s in ordered if s.status in (StepStatus.RUNNING, StepStatus.RETRYING)
        ],
        "completedSteps": [s.step_id for s in completed],
        "failedSteps": [s.step_id for s in ordered if s.status is StepStatus.FAILED],
        "skippedSteps": [s.step_id for s in ordered if s.status is StepStatus.SKIPPED],
        "results": {s.step_id: s.result for s in completed},
    }


T = TypeVar("T")


def _required(value: T | None) -> T:
    assert value is not None
    return value
