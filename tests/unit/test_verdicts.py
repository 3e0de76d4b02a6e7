"""The condition evaluator: a worker process, its time and memory budgets, its cache."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.conditions import ConditionCheck
from app.verdicts import ConditionEvaluator

#: Builds 3,000 copies of a 600 KB string: 1.8 GB unless something stops it.
MEMORY_BOMB = "size(context.l.map(x, context.s + context.s)) > 0"
#: Searches a 100 KB string 2,000 times: about half a second, within the iteration budget.
SLOW = 'context.l.all(x, context.s.contains("abc") == false)'


@pytest.fixture
async def evaluator() -> AsyncIterator[ConditionEvaluator]:
    conditions = ConditionEvaluator()
    try:
        yield conditions
    finally:
        await conditions.aclose()


def check(
    source: str, context: Any = None, steps: Any = None, step_id: str = "a"
) -> ConditionCheck:
    return ConditionCheck(step_id, source, context if context is not None else {}, steps or {})


async def test_verdicts_come_back_in_order(evaluator: ConditionEvaluator) -> None:
    context = {"total": 42}
    verdicts = await evaluator.decide(
        [
            check("context.total > 0", context),
            check("context.total > 100", context),
            check("context.missing > 1", context),
            check(
                "steps.a.result.ok == true",
                context,
                {"a": {"status": "completed", "result": {"ok": True}}},
            ),
        ]
    )
    assert verdicts == [
        True,
        False,
        '`when` could not be evaluated: no such key: "missing"',
        True,
    ]
    assert evaluator.workers_started == 1


async def test_the_same_condition_over_the_same_inputs_is_evaluated_once(
    evaluator: ConditionEvaluator,
) -> None:
    context = {"l": list(range(25_000))}
    checks = [check("size(context.l) > 0", context, step_id=f"s{i}") for i in range(10_000)]
    started = time.perf_counter()
    verdicts = await evaluator.decide(checks)
    assert verdicts == [True] * 10_000
    assert evaluator.evaluations == 1
    # Later batches (another session, the context read again) hit the cache too.
    again = await evaluator.decide([check("size(context.l) > 0", {"l": list(range(25_000))})])
    assert again == [True]
    assert evaluator.evaluations == 1
    # Other inputs are other evaluations.
    assert await evaluator.decide([check("size(context.l) > 0", {"l": [1]})]) == [True]
    assert evaluator.evaluations == 2
    assert time.perf_counter() - started < 10


async def test_siblings_reading_one_large_result_encode_it_once(
    evaluator: ConditionEvaluator,
) -> None:
    result = {"blob": "x" * 1_000_000}
    checks = [
        check(
            "size(steps.big.result.blob) > 0",
            {},
            {"big": {"status": "completed", "result": result}},
            step_id=f"s{i}",
        )
        for i in range(2_000)
    ]
    started = time.perf_counter()
    assert await evaluator.decide(checks) == [True] * 2_000
    # Encoding 2,000 copies of a megabyte would take seconds.
    assert time.perf_counter() - started < 1.0
    assert evaluator.evaluations == 1


async def test_the_cache_is_bounded() -> None:
    conditions = ConditionEvaluator(cache_size=3)
    try:
        for n in range(5):
            await conditions.decide([check(f"context.n == {n}", {"n": n})])
        assert conditions.evaluations == 5
        await conditions.decide([check("context.n == 4", {"n": 4})])
        assert conditions.evaluations == 5
        await conditions.decide([check("context.n == 0", {"n": 0})])
        assert conditions.evaluations == 6
    finally:
        await conditions.aclose()


async def test_an_evaluation_over_its_time_budget_fails_and_the_worker_is_replaced() -> None:
    conditions = ConditionEvaluator(time_budget=0.1)
    context = {"s": "ab" * 50_000, "l": list(range(2_000))}
    try:
        started = time.perf_counter()
        [verdict] = await conditions.decide([check(SLOW, context)])
        assert (
            verdict == "`when` could not be evaluated: it took longer than 0.1 s (the time budget)"
        )
        assert time.perf_counter() - started < 1.0
        # Decided once: the same again is not another wait.
        assert await conditions.decide([check(SLOW, context)]) == [verdict]
        assert conditions.evaluations == 1
        assert await conditions.decide([check("context.s.size() > 0", context)]) == [True]
        assert conditions.workers_started == 2
    finally:
        await conditions.aclose()


async def test_an_evaluation_over_its_memory_budget_fails_and_the_worker_is_replaced(
    evaluator: ConditionEvaluator,
) -> None:
    context = {"s": "x" * 300_000, "l": list(range(3_000))}
    before = _own_peak_kib()
    [verdict] = await evaluator.decide([check(MEMORY_BOMB, context)])
    assert verdict == (
        "`when` could not be evaluated: it needed more than 256 MiB of memory (the memory budget)"
    )
    # The server's own memory never saw it.
    assert _own_peak_kib() - before < 100 * 1024
    assert await evaluator.decide([check("size(context.l) == 3000", context)]) == [True]
    assert evaluator.workers_started == 2


async def test_a_worker_killed_between_evaluations_is_replaced_without_a_wrong_verdict(
    evaluator: ConditionEvaluator,
) -> None:
    assert await evaluator.decide([check("1 < 2")]) == [True]
    worker = evaluator._worker
    assert worker is not None
    os.kill(worker.pid, signal.SIGKILL)
    await worker.wait()
    assert await evaluator.decide([check("2 < 3")]) == [True]
    assert evaluator.workers_started == 2


async def test_a_worker_that_dies_on_an_input_fails_that_step() -> None:
    conditions = ConditionEvaluator()
    # Stands for a worker that crashes (SIGSEGV, abort) on what it was given.
    conditions.worker_command = [sys.executable, "-c", "import os; os.kill(os.getpid(), 11)"]
    try:
        [verdict] = await conditions.decide([check("true")])
        assert verdict.startswith("`when` could not be evaluated: its evaluation crashed")
        # Tried on a fresh worker before giving up.
        assert conditions.workers_started == 2
    finally:
        await conditions.aclose()


async def test_close_stops_the_worker(evaluator: ConditionEvaluator) -> None:
    await evaluator.decide([check("true")])
    worker = evaluator._worker
    assert worker is not None
    await evaluator.aclose()
    assert worker.returncode == 0


def _own_peak_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise LookupError("VmHWM")
