"""The pure workflow state machine, driven in memory: scenarios and random-DAG properties."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.conditions import ConditionCheck, decide
from app.engine import (
    TERMINAL_WORKFLOW_STATUSES,
    AttemptResult,
    DeliveryKind,
    OnFailure,
    RetryPolicy,
    StepErrorCode,
    StepStatus,
    WorkflowStatus,
    classify_answer,
)
from app.machine import (
    ActionRefused,
    CompensationStatus,
    DeliveryView,
    Effects,
    Machine,
    Need,
    NewDelivery,
    StepState,
    WorkflowState,
)

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def ok(result: Any = None) -> AttemptResult:
    return classify_answer(200, orjson.dumps({"success": True, "result": result}))


def flaky() -> AttemptResult:
    return classify_answer(503, b"")


def broken() -> AttemptResult:
    return classify_answer(404, b"")


@dataclass
class Sim:
    """Plays the store and the dispatcher around a machine, entirely in memory."""

    machine: Machine
    outstanding: list[tuple[NewDelivery, int]] = field(default_factory=list)
    dispatched: list[str] = field(default_factory=list)
    compensated: list[str] = field(default_factory=list)
    callbacks: list[NewDelivery] = field(default_factory=list)
    events: list[tuple[str, str | None]] = field(default_factory=list)
    #: Status of every dependency at the moment each step was sent.
    deps_at_dispatch: dict[str, dict[str, StepStatus]] = field(default_factory=dict)

    def drain(self) -> None:
        need = self.machine.run()
        assert need is None, f"everything is loaded, yet the machine asked for {need}"
        effects = self.machine.effects
        dropped = {d.step_id for d in effects.drops}
        self.outstanding = [
            (d, n)
            for d, n in self.outstanding
            if not (d.kind is DeliveryKind.STEP and d.step_id in dropped)
        ]
        for delivery in effects.deliveries:
            if delivery.kind in (DeliveryKind.ON_COMPLETE, DeliveryKind.ON_ERROR):
                self.callbacks.append(delivery)
            else:
                self.outstanding.append((delivery, 1))
                if delivery.kind is DeliveryKind.STEP:
                    self.machine.steps[delivery.step_id or ""].delivery = DeliveryView(
                        DeliveryKind.STEP, 1, in_flight=False
                    )
        self.events.extend((e.type, e.step_id) for e in effects.events)
        self.machine.effects = Effects()

    def claim(self, index: int = 0) -> tuple[NewDelivery, int]:
        delivery, attempt = self.outstanding.pop(index)
        step = self.machine.steps[delivery.step_id or ""]
        if delivery.kind is DeliveryKind.STEP:
            # The store does this when it claims the row.
            step.attempts = attempt
            if step.status is StepStatus.RETRYING:
                step.status = StepStatus.RUNNING
            step.delivery = DeliveryView(DeliveryKind.STEP, attempt, in_flight=True)
            self.dispatched.append(step.step_id)
            self.deps_at_dispatch[step.step_id] = {
                d: self.machine.steps[d].status for d in step.depends_on
            }
        else:
            step.compensation_status = CompensationStatus.RUNNING
            self.compensated.append(step.step_id)
        return delivery, attempt

    def answer(self, delivery: NewDelivery, attempt: int, result: AttemptResult) -> None:
        step_id = delivery.step_id or ""
        if delivery.kind is DeliveryKind.STEP:
            decision = self.machine.attempt_finished(step_id, attempt, result)
        else:
            decision = self.machine.compensation_finished(step_id, attempt, result)
        step = self.machine.steps[step_id]
        if decision is not None and decision.status is StepStatus.RETRYING:
            self.outstanding.append((delivery, attempt + 1))
            if delivery.kind is DeliveryKind.STEP:
                step.delivery = DeliveryView(DeliveryKind.STEP, attempt + 1, in_flight=False)
        elif delivery.kind is DeliveryKind.STEP and (
            decision is not None or step.status is not StepStatus.RUNNING
        ):
            step.delivery = None
        self.drain()

    def send_all(self, answers: dict[str, AttemptResult] | None = None) -> None:
        """Claim and answer until nothing is outstanding (in order)."""
        answers = answers or {}
        while self.outstanding:
            delivery, attempt = self.claim()
            self.answer(
                delivery, attempt, answers.get(delivery.step_id or "", ok(delivery.step_id))
            )

    @property
    def status(self) -> WorkflowStatus:
        return self.machine.workflow.status

    def step(self, step_id: str) -> StepState:
        return self.machine.steps[step_id]


def make(
    steps: list[dict[str, Any]],
    *,
    fail_fast: bool = True,
    saga: bool = False,
    context: Any = None,
    on_complete: str | None = "http://h/done",
    on_error: str | None = "http://h/failed",
    start_at: datetime | None = None,
) -> Sim:
    deps = {s["id"]: list(s.get("dependsOn", [])) for s in steps}
    dependents: dict[str, list[str]] = {s["id"]: [] for s in steps}
    for sid, ds in deps.items():
        for d in ds:
            dependents[d].append(sid)
    states = {
        s["id"]: StepState(
            step_id=s["id"],
            status=StepStatus.PENDING,
            depends_on=deps[s["id"]],
            dependents=dependents[s["id"]],
            deps_remaining=len(deps[s["id"]]),
            url=f"http://h/{s['id']}",
            run_id=f"run-{s['id']}",
            policy=RetryPolicy(max_attempts=s.get("maxAttempts", 1), jitter=False),
            on_failure=OnFailure(
                s.get("onFailure", "ignore" if s.get("continueOnFailure") else "fail")
            ),
            condition=s.get("when"),
            compensation=s.get("compensation"),
            position=i,
        )
        for i, s in enumerate(steps)
    }
    workflow = WorkflowState(
        id="wf",
        name="test",
        status=WorkflowStatus.PENDING if start_at else WorkflowStatus.RUNNING,
        context=context or {},
        fail_fast=fail_fast,
        saga=saga,
        failed_step=None,
        open_steps=len(steps),
        step_count=len(steps),
        on_complete=on_complete,
        on_error=on_error,
    )
    runs = itertools.count(1)
    machine = Machine(
        workflow,
        states,
        graph=deps,
        now=NOW,
        new_run_id=lambda: f"new-{next(runs)}",
        all_loaded=True,
        evaluate=lambda check: decide(check.source, check.context, check.steps),
    )
    machine.start(start_at=start_at)
    sim = Sim(machine)
    sim.drain()
    return sim


DIAMOND = [
    {"id": "start"},
    {"id": "left", "dependsOn": ["start"]},
    {"id": "right", "dependsOn": ["start"]},
    {"id": "merge", "dependsOn": ["left", "right"]},
]


def test_diamond_completes_in_dependency_order() -> None:
    sim = make(DIAMOND)
    assert [d.step_id for d, _ in sim.outstanding] == ["start"]
    sim.send_all()
    assert sim.status is WorkflowStatus.COMPLETED
    assert sim.dispatched[0] == "start" and sim.dispatched[-1] == "merge"
    assert [c.kind for c in sim.callbacks] == [DeliveryKind.ON_COMPLETE]
    payload = sim.callbacks[0].payload
    assert payload is not None
    assert payload["status"] == "completed"
    assert payload["results"] == {s: s for s in ("start", "left", "right", "merge")}
    assert ("workflow.completed", None) in sim.events


def test_readiness_counts_down_instead_of_rescanning() -> None:
    sim = make(DIAMOND)
    sim.answer(*sim.claim(), ok())
    assert sim.step("merge").deps_remaining == 2
    delivery, attempt = next((d, n) for d, n in sim.outstanding if d.step_id == "left")
    sim.outstanding.remove((delivery, attempt))
    sim.machine.steps["left"].attempts = 1
    sim.answer(delivery, 1, ok())
    assert sim.step("merge").deps_remaining == 1
    assert sim.step("merge").status is StepStatus.PENDING


def test_failure_cancels_everything_pending_under_fail_fast() -> None:
    sim = make(
        [
            {"id": "a"},
            {"id": "b"},
            {"id": "a2", "dependsOn": ["a"]},
            {"id": "b2", "dependsOn": ["b"]},
        ]
    )
    sim.send_all({"a": broken()})
    assert sim.step("a").status is StepStatus.FAILED
    # b was already claimed and answered first in order; b2 became ready after a failed.
    assert sim.step("a2").status is StepStatus.CANCELLED
    assert sim.status is WorkflowStatus.FAILED
    assert sim.machine.workflow.error is not None
    assert sim.machine.workflow.error["code"] == "step_failed"
    assert sim.machine.workflow.error["stepId"] == "a"
    assert [c.kind for c in sim.callbacks] == [DeliveryKind.ON_ERROR]


def test_without_fail_fast_independent_branches_run_on() -> None:
    steps = [
        {"id": "a"},
        {"id": "b"},
        {"id": "a2", "dependsOn": ["a"]},
        {"id": "b2", "dependsOn": ["b"]},
    ]
    sim = make(steps, fail_fast=False)
    sim.send_all({"a": broken()})
    assert sim.step("a2").status is StepStatus.CANCELLED
    assert sim.step("b2").status is StepStatus.COMPLETED
    assert sim.status is WorkflowStatus.FAILED


def test_fail_fast_lets_in_flight_finish_but_starts_nothing() -> None:
    sim = make([{"id": "a"}, {"id": "b"}, {"id": "b2", "dependsOn": ["b"]}])
    a = sim.claim(0)
    b = sim.claim(0)  # both on the wire
    sim.answer(*a, broken())
    assert sim.status is WorkflowStatus.RUNNING  # b is still in flight
    sim.answer(*b, ok("late"))
    assert sim.step("b").status is StepStatus.COMPLETED
    assert sim.step("b2").status is StepStatus.CANCELLED
    assert "b2" not in sim.dispatched
    assert sim.status is WorkflowStatus.FAILED


def test_continue_on_failure_lets_dependents_see_the_failure() -> None:
    sim = make([{"id": "a", "continueOnFailure": True}, {"id": "b", "dependsOn": ["a"]}])
    sim.send_all({"a": broken()})
    assert sim.step("a").status is StepStatus.FAILED
    assert sim.step("b").status is StepStatus.COMPLETED
    assert sim.deps_at_dispatch["b"] == {"a": StepStatus.FAILED}
    assert sim.status is WorkflowStatus.COMPLETED
    assert sim.callbacks[0].payload is not None
    assert sim.callbacks[0].payload["failedSteps"] == ["a"]


# --------------------------------------------------------------------------- onFailure

#: A diamond whose left branch fails for good; ``merge`` also waits for a slow ``right``.
FAILING_LEFT = [
    {"id": "start"},
    {"id": "left", "dependsOn": ["start"]},
    {"id": "right", "dependsOn": ["start"]},
    {"id": "merge", "dependsOn": ["left", "right"], "when": "true"},
]


def _claim_step(sim: Sim, step_id: str) -> tuple[NewDelivery, int]:
    return sim.claim(next(i for i, (d, _) in enumerate(sim.outstanding) if d.step_id == step_id))


def _diamond_with_left(on_failure: str, *, saga: bool = False) -> tuple[Sim, Any]:
    """The diamond after ``left`` failed for good while ``right`` is still on the wire."""
    steps = [dict(s) for s in FAILING_LEFT]
    steps[1]["onFailure"] = on_failure
    steps[0]["compensation"] = "http://h/undo-start"
    sim = make(steps, saga=saga)
    sim.answer(*_claim_step(sim, "start"), ok("s"))
    right = _claim_step(sim, "right")
    sim.answer(*_claim_step(sim, "left"), broken())
    return sim, right


def test_on_failure_fail_dooms_the_workflow_and_compensates() -> None:
    sim, right = _diamond_with_left("fail", saga=True)
    sim.answer(*right, ok("r"))
    sim.send_all()
    assert sim.step("merge").status is StepStatus.CANCELLED
    assert sim.compensated == ["start"]
    assert sim.status is WorkflowStatus.COMPENSATED


@pytest.mark.parametrize("option", ["ignore", "remove"])
def test_on_failure_ignore_and_remove_let_dependents_run_when_the_rest_is_done(
    option: str,
) -> None:
    sim, right = _diamond_with_left(option, saga=True)
    assert sim.step("merge").status is StepStatus.PENDING  # still waits for right
    sim.answer(*right, ok("r"))
    sim.send_all()
    assert sim.deps_at_dispatch["merge"] == {
        "left": StepStatus.FAILED,
        "right": StepStatus.COMPLETED,
    }
    assert sim.step("merge").status is StepStatus.COMPLETED
    # Not a failure of the workflow: no compensation, onComplete.
    assert sim.status is WorkflowStatus.COMPLETED
    assert sim.compensated == []
    assert [c.kind for c in sim.callbacks] == [DeliveryKind.ON_COMPLETE]


@pytest.mark.parametrize(("option", "seen"), [("ignore", True), ("remove", False)])
def test_on_failure_remove_leaves_the_step_out_of_previous_steps(option: str, seen: bool) -> None:
    sim = make([{"id": "a", "onFailure": option}, {"id": "b", "dependsOn": ["a"], "when": "true"}])
    sim.machine._evaluate = None  # ask for the verdict, to see what it is asked with
    _, attempt = _claim_step(sim, "a")
    sim.machine.attempt_finished("a", attempt, broken())
    need = sim.machine.run()
    assert need is not None and [c.step_id for c in need.conditions] == ["b"]
    assert ("a" in need.conditions[0].steps) is seen


def test_on_failure_continue_starts_direct_dependents_at_once() -> None:
    sim, right = _diamond_with_left("continue")
    # merge went out while right is still on the wire.
    assert sim.step("merge").status is StepStatus.RUNNING
    assert sim.step("right").status is StepStatus.RUNNING
    sim.answer(*_claim_step(sim, "merge"), ok("m"))
    assert sim.deps_at_dispatch["merge"] == {
        "left": StepStatus.FAILED,
        "right": StepStatus.RUNNING,
    }
    assert sim.status is WorkflowStatus.RUNNING  # right still open
    sim.answer(*right, ok("r"))
    assert sim.status is WorkflowStatus.COMPLETED
    # merge ran once; right settling later did not start it again.
    assert sim.dispatched.count("merge") == 1
    assert sim.outstanding == []


def test_a_skipped_step_is_never_a_failure_whatever_its_option() -> None:
    for option in ("fail", "ignore", "remove", "continue"):
        sim = make(
            [
                {"id": "a", "when": "false", "onFailure": option},
                {"id": "b", "dependsOn": ["a"]},
            ]
        )
        sim.send_all()
        assert sim.step("a").status is StepStatus.SKIPPED
        assert sim.step("b").status is StepStatus.COMPLETED
        assert sim.status is WorkflowStatus.COMPLETED


def test_a_workflow_retry_reruns_only_steps_that_failed_it() -> None:
    sim = make(
        [
            {"id": "a", "onFailure": "ignore"},
            {"id": "b"},
            {"id": "c", "dependsOn": ["a", "b"]},
        ]
    )
    sim.send_all({"a": broken(), "b": broken()})
    assert sim.status is WorkflowStatus.FAILED
    sim.machine.retry_workflow()
    sim.drain()
    assert sim.step("a").status is StepStatus.FAILED  # did not fail the workflow: kept
    assert sim.step("b").status is StepStatus.RUNNING
    sim.send_all()
    assert sim.status is WorkflowStatus.COMPLETED


# --------------------------------------------------------------------------- delayed start


def _delayed(steps: list[dict[str, Any]]) -> Sim:
    return make(steps, start_at=NOW + timedelta(hours=1))


def test_a_delayed_workflow_stays_pending_and_sends_nothing() -> None:
    sim = _delayed(DIAMOND)
    assert sim.status is WorkflowStatus.PENDING
    assert sim.outstanding == [] and sim.callbacks == []
    assert sim.events == [("workflow.created", None)]
    assert all(s.status is StepStatus.PENDING for s in sim.machine.steps.values())


def test_a_delayed_workflow_begins_with_its_timeout_counted_from_then() -> None:
    sim = _delayed(DIAMOND)
    later = NOW + timedelta(hours=1)
    sim.machine.now = later
    assert sim.machine.begin() is True
    effects = sim.machine.effects
    assert effects.workflow["status"] is WorkflowStatus.RUNNING
    assert effects.workflow["started_at"] == later
    assert effects.workflow["deadline_at"] == later + timedelta(seconds=86400)
    sim.drain()
    assert ("workflow.started", None) in sim.events
    assert [d.step_id for d, _ in sim.outstanding] == ["start"]
    assert sim.machine.begin() is False  # begun already: a second start does nothing
    sim.send_all()
    assert sim.status is WorkflowStatus.COMPLETED


def test_a_pending_workflow_can_be_cancelled_and_then_never_begins() -> None:
    sim = _delayed(DIAMOND)
    sim.machine.cancel(compensate=False)
    sim.drain()
    assert sim.status is WorkflowStatus.CANCELLED
    assert all(s.status is StepStatus.CANCELLED for s in sim.machine.steps.values())
    assert "workflow.started" not in [t for t, _ in sim.events]
    assert [c.kind for c in sim.callbacks] == [DeliveryKind.ON_ERROR]
    assert sim.machine.begin() is False


def test_a_pending_workflow_neither_times_out_nor_reruns_steps() -> None:
    sim = _delayed(DIAMOND)
    sim.machine.timeout()
    sim.drain()
    assert sim.status is WorkflowStatus.PENDING
    with pytest.raises(ActionRefused, match="pending"):
        sim.machine.retry_step("start")


def test_retries_then_success() -> None:
    sim = make([{"id": "a", "maxAttempts": 3}])
    delivery, attempt = sim.claim()
    sim.answer(delivery, attempt, flaky())
    assert sim.step("a").status is StepStatus.RETRYING
    assert sim.outstanding[0][1] == 2
    sim.send_all()
    assert sim.step("a").status is StepStatus.COMPLETED
    types = [t for t, _ in sim.events]
    assert types.count("step.failed") == 1
    assert types.count("step.retrying") == 1


def test_when_false_skips_and_dependents_proceed() -> None:
    sim = make(
        [
            {"id": "a"},
            {"id": "b", "dependsOn": ["a"], "when": "steps.a.result.go == true"},
            {"id": "c", "dependsOn": ["b"]},
        ]
    )
    sim.send_all({"a": ok({"go": False})})
    assert sim.step("b").status is StepStatus.SKIPPED
    assert sim.step("c").status is StepStatus.COMPLETED
    assert "b" not in sim.dispatched
    assert sim.status is WorkflowStatus.COMPLETED
    assert ("step.skipped", "b") in sim.events


def test_when_over_context_at_the_root() -> None:
    sim = make([{"id": "a", "when": "context.total > 0"}], context={"total": 42.5})
    assert [d.step_id for d, _ in sim.outstanding] == ["a"]
    sim = make([{"id": "a", "when": "context.total > 0"}], context={"total": 0})
    assert sim.status is WorkflowStatus.COMPLETED
    assert sim.step("a").status is StepStatus.SKIPPED


def test_when_evaluation_error_fails_the_step() -> None:
    sim = make([{"id": "a", "when": "context.missing.deep > 1"}])
    assert sim.step("a").status is StepStatus.FAILED
    assert sim.step("a").error is not None
    assert sim.step("a").error["code"] == "condition_error"
    assert sim.status is WorkflowStatus.FAILED


def test_cancel_ends_at_once_and_in_flight_answers_start_nothing() -> None:
    sim = make([{"id": "a"}, {"id": "b", "dependsOn": ["a"]}, {"id": "c"}])
    in_flight = sim.claim(0)  # a is on the wire; c is queued
    sim.machine.cancel(compensate=False)
    sim.drain()
    assert sim.status is WorkflowStatus.CANCELLED
    assert sim.step("c").status is StepStatus.CANCELLED
    assert sim.step("b").status is StepStatus.CANCELLED
    assert sim.step("a").status is StepStatus.RUNNING
    sim.answer(*in_flight, ok("late"))
    assert sim.step("a").status is StepStatus.COMPLETED
    assert sim.status is WorkflowStatus.CANCELLED
    assert [c.kind for c in sim.callbacks] == [DeliveryKind.ON_ERROR]
    assert sim.callbacks[0].payload is not None
    assert sim.callbacks[0].payload["status"] == "cancelled"
    assert sim.callbacks[0].payload["error"] == {
        "code": "cancelled",
        "message": "the workflow was cancelled",
        "stepId": None,
    }
    with pytest.raises(ActionRefused):
        sim.machine.cancel(compensate=False)


def test_retry_workflow_reruns_only_what_failed() -> None:
    sim = make([{"id": "a"}, {"id": "b", "dependsOn": ["a"]}, {"id": "c", "dependsOn": ["b"]}])
    sim.send_all({"b": broken()})
    assert sim.status is WorkflowStatus.FAILED
    with pytest.raises(ActionRefused):
        sim.machine.cancel(compensate=False)
    sim.machine.retry_workflow()
    sim.drain()
    assert sim.status is WorkflowStatus.RUNNING
    assert sim.step("b").status is StepStatus.RUNNING
    assert sim.step("b").run_id.startswith("new-")
    assert sim.step("a").status is StepStatus.COMPLETED
    sim.send_all()
    assert sim.status is WorkflowStatus.COMPLETED
    assert sim.dispatched.count("a") == 1
    assert sim.dispatched.count("b") == 2


def test_retry_is_refused_unless_failed() -> None:
    sim = make([{"id": "a"}])
    with pytest.raises(ActionRefused):
        sim.machine.retry_workflow()
    sim.send_all()
    with pytest.raises(ActionRefused):
        sim.machine.retry_workflow()


def test_retry_step_reruns_it_and_everything_downstream() -> None:
    sim = make([*DIAMOND, {"id": "other"}])
    sim.send_all()
    assert sim.status is WorkflowStatus.COMPLETED
    sim.machine.retry_step("left")
    sim.drain()
    assert sim.status is WorkflowStatus.RUNNING
    assert sim.step("merge").status is StepStatus.PENDING
    assert sim.step("right").status is StepStatus.COMPLETED
    sim.send_all()
    assert sim.status is WorkflowStatus.COMPLETED
    assert sim.dispatched.count("left") == 2
    assert sim.dispatched.count("merge") == 2
    assert sim.dispatched.count("right") == 1
    assert sim.dispatched.count("other") == 1


def test_retry_step_refused_while_running() -> None:
    sim = make([{"id": "a"}])
    with pytest.raises(ActionRefused):
        sim.machine.retry_step("a")


def test_timeout_fails_the_workflow() -> None:
    sim = make([{"id": "a"}, {"id": "b", "dependsOn": ["a"]}])
    sim.machine.timeout()
    sim.drain()
    assert sim.status is WorkflowStatus.FAILED
    assert sim.machine.workflow.error is not None
    assert sim.machine.workflow.error["code"] == "workflow_timeout"
    assert sim.step("a").status is StepStatus.CANCELLED
    assert sim.step("b").status is StepStatus.CANCELLED


def test_saga_compensates_in_reverse_completion_order() -> None:
    sim = make(
        [
            {"id": "a", "compensation": "http://h/undo-a"},
            {"id": "b", "compensation": "http://h/undo-b", "dependsOn": ["a"]},
            {"id": "c", "dependsOn": ["b"]},
            {"id": "d", "dependsOn": ["c"], "compensation": "http://h/undo-d"},
        ],
        saga=True,
    )
    sim.send_all({"c": broken()})
    assert sim.status is WorkflowStatus.COMPENSATED
    assert sim.compensated == ["b", "a"]
    assert sim.step("d").compensation_status is None
    types = [t for t, _ in sim.events]
    assert types.index("workflow.compensating") < types.index("workflow.compensated")
    assert [c.kind for c in sim.callbacks] == [DeliveryKind.ON_ERROR]
    assert sim.callbacks[0].payload is not None
    assert sim.callbacks[0].payload["status"] == "compensated"


def test_failed_compensation_waits_for_retry() -> None:
    sim2 = make(
        [
            {"id": "a", "compensation": "http://h/undo-a"},
            {"id": "b", "compensation": "http://h/undo-b", "dependsOn": ["a"]},
            {"id": "c", "dependsOn": ["b"]},
        ],
        saga=True,
    )
    while sim2.outstanding:
        delivery, attempt = sim2.claim()
        if (
            delivery.kind is DeliveryKind.COMPENSATION and delivery.step_id == "b"
        ) or delivery.step_id == "c":
            sim2.answer(delivery, attempt, broken())
        else:
            sim2.answer(delivery, attempt, ok())
    assert sim2.status is WorkflowStatus.COMPENSATION_FAILED
    assert sim2.step("b").compensation_status == CompensationStatus.FAILED
    assert sim2.step("a").compensation_status == CompensationStatus.PENDING
    sim2.machine.retry_workflow()
    sim2.drain()
    assert sim2.status is WorkflowStatus.COMPENSATING
    sim2.send_all()
    assert sim2.status is WorkflowStatus.COMPENSATED
    assert sim2.compensated == ["b", "b", "a"]


def test_cancel_with_compensation() -> None:
    sim = make([{"id": "a", "compensation": "http://h/undo-a"}, {"id": "b", "dependsOn": ["a"]}])
    delivery, attempt = sim.claim()
    sim.answer(delivery, attempt, ok())
    sim.machine.cancel(compensate=True)
    sim.drain()
    assert sim.status is WorkflowStatus.COMPENSATING
    sim.send_all()
    assert sim.status is WorkflowStatus.COMPENSATED
    assert sim.compensated == ["a"]


def test_machine_asks_only_for_what_it_needs() -> None:
    steps = {
        "a": StepState("a", StepStatus.RUNNING, [], ["b"], 0, "http://h/a", "r", attempts=1),
    }
    b = StepState("b", StepStatus.PENDING, ["a"], [], 1, "http://h/b", "r", position=1)
    machine = Machine(
        WorkflowState("wf", None, WorkflowStatus.RUNNING, {}, True, False, None, 3, 3),
        steps,
        graph={"a": [], "b": ["a"], "z": []},
        now=NOW,
        new_run_id=lambda: "x",
    )
    machine.attempt_finished("a", 1, ok())
    assert machine.run() == Need(step_ids=frozenset({"b"}))
    machine.provide([b])
    assert machine.run() is None
    assert [d.step_id for d in machine.effects.deliveries] == ["b"]


def test_without_an_evaluator_the_machine_asks_for_verdicts_in_batches() -> None:
    def state(step_id: str, deps: list[str], dependents: list[str], when: str | None) -> StepState:
        return StepState(
            step_id,
            StepStatus.PENDING,
            deps,
            dependents,
            len(deps),
            f"http://h/{step_id}",
            f"run-{step_id}",
            condition=when,
            position=ord(step_id[0]) - ord("a"),
        )

    steps = {
        "a": state("a", [], ["d"], "context.x > 1"),
        "b": state("b", [], [], "context.x > 1"),
        "c": state("c", [], [], None),
        "d": state("d", ["a"], [], "steps.a.status == 'skipped'"),
        "e": state("e", [], [], "context.y > 1"),
    }
    steps["e"].on_failure = OnFailure.IGNORE
    context = {"x": 1}
    machine = Machine(
        WorkflowState("wf", None, WorkflowStatus.RUNNING, context, True, False, None, 5, 5),
        steps,
        graph={"a": [], "b": [], "c": [], "d": ["a"], "e": []},
        now=NOW,
        new_run_id=lambda: "x",
        all_loaded=True,
    )
    machine.start()
    need = machine.run()
    # Every ready root with a condition, in one batch; c has none and is not asked about.
    assert need == Need(
        conditions=(
            ConditionCheck("a", "context.x > 1", context, {}),
            ConditionCheck("b", "context.x > 1", context, {}),
            ConditionCheck("e", "context.y > 1", context, {}),
        )
    )
    machine.provide_verdicts({"a": False, "b": True, "e": "`when` could not be evaluated: no"})
    # a was skipped, so d is ready: its condition reads a's state.
    need = machine.run()
    assert need == Need(
        conditions=(
            ConditionCheck(
                "d", "steps.a.status == 'skipped'", context, {"a": {"status": "skipped"}}
            ),
        )
    )
    machine.provide_verdicts({"d": True})
    assert machine.run() is None
    assert machine.steps["a"].status is StepStatus.SKIPPED
    assert machine.steps["e"].status is StepStatus.FAILED
    assert machine.steps["e"].error == {
        "code": "condition_error",
        "message": "`when` could not be evaluated: no",
        "httpStatus": None,
    }
    # e failed (it may: continueOnFailure) and the rest went out.
    assert {s: machine.steps[s].status for s in "bcd"} == dict.fromkeys("bcd", StepStatus.RUNNING)
    assert [d.step_id for d in machine.effects.deliveries] == ["b", "c", "d"]


# --------------------------------------------------------------------------- properties


@st.composite
def random_workflows(draw: st.DrawFn) -> tuple[list[dict[str, Any]], bool, bool, int]:
    size = draw(st.integers(min_value=1, max_value=9))
    steps = []
    for i in range(size):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        steps.append(
            {
                "id": f"s{i}",
                "dependsOn": [f"s{d}" for d in deps],
                "maxAttempts": draw(st.integers(1, 3)),
                "onFailure": draw(st.sampled_from([p.value for p in OnFailure])),
                "compensation": f"http://h/undo-{i}" if draw(st.booleans()) else None,
            }
        )
    return steps, draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 2**32))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_workflows())
def test_random_dags_reach_one_terminal_status_respecting_the_rules(
    case: tuple[list[dict[str, Any]], bool, bool, int],
) -> None:
    steps, fail_fast, saga, seed = case
    rng = random.Random(seed)
    sim = make(steps, fail_fast=fail_fast, saga=saga)
    completion_order: list[str] = []
    for _ in range(500):
        if not sim.outstanding:
            break
        # Answer in a random order, sometimes leaving several requests in flight.
        delivery, attempt = sim.claim(rng.randrange(len(sim.outstanding)))
        roll = rng.random()
        if delivery.kind is DeliveryKind.COMPENSATION:
            result = ok() if roll < 0.85 else broken()
        elif roll < 0.6:
            result = ok(delivery.step_id)
        elif roll < 0.85:
            result = flaky()
        else:
            result = broken()
        sim.answer(delivery, attempt, result)
        if delivery.kind is DeliveryKind.STEP and sim.step(delivery.step_id or "").status is (
            StepStatus.COMPLETED
        ):
            completion_order.append(delivery.step_id or "")
    else:
        pytest.fail("the simulation did not settle")

    # Exactly one terminal status, and no step left open.
    assert sim.status in TERMINAL_WORKFLOW_STATUSES
    for step in sim.machine.steps.values():
        assert step.status in (
            StepStatus.COMPLETED,
            StepStatus.FAILED,
            StepStatus.SKIPPED,
            StepStatus.CANCELLED,
        ), (step.step_id, step.status)
    assert sim.machine.workflow.open_steps == 0
    # No step was sent before each of its dependencies had settled in a way that lets it
    # run — unless one of them failed with onFailure "continue", which sends it at once.
    state = sim.machine.steps
    for step_id, deps in sim.deps_at_dispatch.items():
        if any(
            status is StepStatus.FAILED and state[dep].on_failure is OnFailure.CONTINUE
            for dep, status in deps.items()
        ):
            continue
        for dep, status in deps.items():
            assert (
                status is StepStatus.COMPLETED
                or status is StepStatus.SKIPPED
                or (status is StepStatus.FAILED and state[dep].on_failure is not OnFailure.FAIL)
            ), (step_id, dep, status)
    # Only a step failing with onFailure "fail" fails the workflow.
    failed = [s for s in state.values() if s.status is StepStatus.FAILED]
    if sim.status is WorkflowStatus.COMPLETED:
        assert all(s.on_failure is not OnFailure.FAIL for s in failed)
    # Nothing is both completed and cancelled.
    done = {s for t, s in sim.events if t == "step.completed"}
    cancelled = {s for t, s in sim.events if t == "step.cancelled"}
    assert not done & cancelled
    # Compensation: exactly the completed steps with a compensation URL, in reverse order.
    if sim.compensated:
        expected = [s for s in reversed(completion_order) if sim.machine.steps[s].compensation]
        attempted = list(dict.fromkeys(sim.compensated))
        if sim.status is WorkflowStatus.COMPENSATED:
            assert attempted == expected
        else:
            assert sim.status is WorkflowStatus.COMPENSATION_FAILED
            assert attempted == expected[: len(attempted)]
    elif sim.status is WorkflowStatus.FAILED:
        assert not (saga and any(sim.machine.steps[s].compensation for s in completion_order))
    # Exactly one callback, of the right kind, once the workflow ended.
    kinds = [c.kind for c in sim.callbacks]
    if sim.status is WorkflowStatus.COMPLETED:
        assert kinds == [DeliveryKind.ON_COMPLETE]
    else:
        assert kinds == [DeliveryKind.ON_ERROR]


def test_error_codes_are_wire_strings() -> None:
    assert StepErrorCode.HTTP_ERROR == "http_error"
    assert WorkflowStatus.COMPENSATION_FAILED == "compensation_failed"


def test_retry_step_refused_while_a_downstream_step_runs() -> None:
    sim = make([{"id": "a"}, {"id": "b", "dependsOn": ["a"]}])
    sim.answer(*sim.claim(), ok())
    sim.claim()  # b is on the wire
    sim.machine.retry_step("a")
    with pytest.raises(ActionRefused, match="'b' downstream of 'a'"):
        sim.machine.run()


def test_resumed_compensation_is_a_new_run() -> None:
    sim = make(
        [{"id": "a", "compensation": "http://h/undo-a"}, {"id": "b", "dependsOn": ["a"]}],
        saga=True,
    )
    runs: list[str] = []
    while sim.outstanding:
        delivery, attempt = sim.claim()
        if delivery.kind is DeliveryKind.COMPENSATION:
            runs.append(delivery.run_id)
        sim.answer(delivery, attempt, broken() if delivery.step_id == "b" or runs else ok())
    assert sim.status is WorkflowStatus.COMPENSATION_FAILED
    sim.machine.retry_workflow()
    sim.drain()
    delivery, attempt = sim.claim()
    runs.append(delivery.run_id)
    assert runs[0] != runs[1]


def test_completions_are_numbered_by_the_workflows_counter() -> None:
    """completion_seq is the workflow's own counter (taken under its lock by the store),
    never a clock: reverse completion order holds across processes."""
    steps = {
        "a": StepState("a", StepStatus.RUNNING, [], [], 0, "http://h/a", "r", attempts=1),
        "b": StepState("b", StepStatus.RUNNING, [], [], 0, "http://h/b", "r", attempts=1),
    }
    workflow = WorkflowState("wf", None, WorkflowStatus.RUNNING, {}, True, False, None, 2, 2)
    workflow.completions = 41
    machine = Machine(
        workflow, steps, graph={"a": [], "b": []}, now=NOW, new_run_id=str, all_loaded=True
    )
    machine.attempt_finished("b", 1, ok())
    machine.attempt_finished("a", 1, ok())
    assert machine.run() is None
    assert machine.effects.steps["b"]["completion_seq"] == 42
    assert machine.effects.steps["a"]["completion_seq"] == 43
    assert machine.effects.workflow["completions"] == 43
