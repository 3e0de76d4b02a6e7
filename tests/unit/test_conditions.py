"""Tests for app.conditions: the `when` language, its errors, and random JSON inputs."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import gc
import sys
import time
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.conditions import (
    MAX_CONDITION_LENGTH,
    Condition,
    ConditionError,
    ConditionEvaluationError,
    ConditionSyntaxError,
    compile_condition,
)
from app.errors import BatonError

Steps = dict[str, dict[str, Any]]

ORDER: dict[str, Any] = {
    "orderId": "order_123",
    "total": 4200,
    "price": 42.5,
    "tags": ["vip", "eu"],
    "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}],
    "customer": {"name": "Ada", "email": None, "address": {"country": "FR"}},
    "coupon": None,
    "express": True,
}

STEPS: Steps = {
    "validate": {"status": "completed", "result": {"ok": True, "total": 4200, "notes": []}},
    "charge": {"status": "completed", "result": {"id": "ch_1", "amount": 42.5}},
    "a": {"status": "completed", "result": {"x": 0, "nested": {"deep": [1, {"y": "z"}]}}},
    "audit": {"status": "skipped"},
    "notify": {"status": "failed", "error": {"code": "http_error", "httpStatus": 500}},
    "empty": {"status": "completed", "result": None},
}


def check(source: str, context: Any = None, steps: Steps | None = None) -> bool:
    """Compile and evaluate, with the order fixtures as defaults."""
    return compile_condition(source).evaluate(
        ORDER if context is None else context, STEPS if steps is None else steps
    )


def assert_clean_message(message: str) -> None:
    """One short line for an API client: no traceback, no C++ status codes."""
    assert message
    assert "\n" not in message
    assert len(message) <= 300
    assert "Traceback" not in message
    for code in ("INVALID_ARGUMENT", "UNKNOWN:", "NOT_FOUND", "INTERNAL", "CANCELLED"):
        assert code not in message


# ------------------------------------------------------------------ the language


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # The examples of the documentation.
        ("context.total > 0", True),
        ('steps.validate.result.ok == true && steps.charge.status == "completed"', True),
        ("has(steps.a.result.x)", True),
        ('"vip" in context.tags', True),
        ("size(context.items) >= 2", True),
        # Logic.
        ("context.total > 0 && context.express", True),
        ("context.total < 0 || !context.express", False),
        ("context.total > 1000 ? context.express : false", True),
        # Strings.
        ('context.orderId == "order_123"', True),
        ('context.orderId.startsWith("order_")', True),
        ('context.orderId.endsWith("_123")', True),
        ('context.orderId.contains("der")', True),
        ('context.orderId.matches("^order_[0-9]+$")', True),
        ("size(context.orderId) == 9", True),
        ('context.customer.name + "!" == "Ada!"', True),
        ('"Ada" < "Bob"', True),
        # Lists and `in`.
        ('"us" in context.tags', False),
        ('context.tags[0] == "vip"', True),
        ("context.tags.size() == 2", True),
        ('context.items.exists(i, i.sku == "b")', True),
        ("context.items.all(i, i.qty > 0)", True),
        ("context.items.exists_one(i, i.qty == 2)", True),
        ("context.items.filter(i, i.qty > 1).size() == 1", True),
        ("context.items.map(i, i.qty) == [1, 2]", True),
        ('"express" in context', True),
        ('"validate" in steps', True),
        ('"missing" in steps', False),
        # has() on maps and nested results.
        ("has(steps.a.result.y)", False),
        ("has(context.customer.address.country)", True),
        ("has(context.customer.phone)", False),
        ('steps.a.result.nested.deep[1].y == "z"', True),
        ("size(steps.validate.result.notes) == 0", True),
        # Null handling.
        ("context.coupon == null", True),
        ("context.customer.email == null", True),
        ("has(context.coupon)", True),
        ("context.customer.name != null", True),
        ("steps.empty.result == null", True),
        # Skipped and failed ancestors.
        ('steps.audit.status == "skipped"', True),
        ("has(steps.audit.result)", False),
        ('steps.notify.status == "failed" && steps.notify.error.httpStatus == 500', True),
        ('steps.exists(id, steps[id].status == "skipped")', True),
        # Errors on the losing side of && and || do not matter (CEL is commutative here).
        ("false && context.missing", False),
        ("context.missing || true", True),
        ("context.missing > 0 && false", False),
    ],
)
def test_examples(source: str, expected: bool) -> None:
    assert check(source) is expected


@pytest.mark.parametrize(
    ("source", "value", "expected"),
    [
        # JSON does not tell 4200 from 4200.0: comparisons must work across int and double.
        ("context.total > 0", 4200, True),
        ("context.total > 0", 42.5, True),
        ("context.total > 0", 0, False),
        ("context.total > 0", 0.0, False),
        ("context.total > 0", -0.5, False),
        ("context.total > 0.5", 1, True),
        ("context.total >= 42.0", 42, True),
        ("context.total == 42", 42.0, True),
        ("context.total != 42", 42.0, False),
        ("context.total < 100", 99.99, True),
        ("context.total in [1, 2, 42]", 42.0, True),
        ("context.total + 1 == 43", 42, True),
        ("context.total + 1.0 == 43.5", 42.5, True),
        ("double(context.total) * 1.5 > 60.0", 42, True),
        ("int(context.total) == 42", 42.9, True),
        ("context.total % 2 == 0", 42, True),
        ("context.total / 4 == 10", 42, True),  # integer division, as in CEL
        ("context.total > 0", 2**63, True),  # beyond int64, still a JSON integer
        ("context.total > 0", -(2**63), False),
        ("context.total == 1e300", 1e300, True),
    ],
)
def test_numbers(source: str, value: float, expected: bool) -> None:
    assert check(source, {"total": value}) is expected


def test_booleans_are_not_numbers() -> None:
    # Python's bool is an int; CEL's is not, and must not compare with numbers.
    assert check("context.flag == true", {"flag": True}) is True
    with pytest.raises(ConditionEvaluationError, match="no matching overload for '>'"):
        check("context.flag > 0", {"flag": True})


def test_the_result_is_a_real_bool() -> None:
    assert type(check("context.total > 0")) is bool
    assert type(check("context.express")) is bool


def test_steps_may_be_any_mapping() -> None:
    steps = MappingProxyType({"a": MappingProxyType({"status": "completed", "result": 1})})
    assert compile_condition("steps.a.result == 1").evaluate({}, steps) is True


class Status(enum.StrEnum):
    COMPLETED = "completed"
    SKIPPED = "skipped"


class Code(enum.IntEnum):
    TEAPOT = 418


def test_step_states_may_hold_enums() -> None:
    # Stored statuses come back as a StrEnum; the binding refuses str subclasses.
    steps = {
        "a": {"status": Status.COMPLETED, "result": {"ok": True}},
        "b": {"status": Status.SKIPPED},
        "c": {"status": "failed", "error": Code.TEAPOT},
    }
    source = 'steps.a.status == "completed" && steps.b.status == "skipped" && steps.c.error == 418'
    assert compile_condition(source).evaluate({}, steps) is True


def test_evaluate_leaves_its_inputs_alone() -> None:
    context = {"items": [3, 1, 2], "m": {"k": "v"}}
    steps: Steps = {"a": {"status": "completed", "result": {"x": [1]}}}
    before = (repr(context), repr(steps))
    check("context.items.map(i, i * 2).size() == 3 && has(steps.a.result.x)", context, steps)
    assert (repr(context), repr(steps)) == before


def test_context_need_not_be_an_object() -> None:
    assert compile_condition("context == null").evaluate(None, {}) is True
    assert compile_condition("size(context) == 2").evaluate([1, 2], {}) is True
    assert compile_condition('context == "x"').evaluate("x", {}) is True


# ------------------------------------------------------------------ compile errors


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("context.total >", "line 1, column 16: Syntax error: unexpected end of expression"),
        ("(context.total > 0", "missing ')'"),
        ("context.total > 0 0", "extraneous input '0'"),
        ("context.total = 1", "Syntax error"),
        ("context.total > 0 &&", "Syntax error"),
        ("'unterminated", "Syntax error"),
        ('"a" + ', "Syntax error"),
        ("context.\n  total >", "line 2"),
        ("context..total", "Syntax error"),
        ("((" * 20 + "true" + "))" * 20, "nested too deeply"),
        (" + ".join(["1"] * 60) + " > 0", "nested too deeply"),
    ],
)
def test_syntax_errors(source: str, fragment: str) -> None:
    with pytest.raises(ConditionSyntaxError) as caught:
        compile_condition(source)
    assert fragment in str(caught.value)
    assert_clean_message(str(caught.value))


@pytest.mark.parametrize("source", ["", " ", "\n\t  "])
def test_empty_conditions_are_refused(source: str) -> None:
    with pytest.raises(ConditionSyntaxError, match="empty"):
        compile_condition(source)


def test_length_limit() -> None:
    padding = "x" * (MAX_CONDITION_LENGTH - len('context.s == ""'))
    longest = f'context.s == "{padding}"'
    assert len(longest) == MAX_CONDITION_LENGTH
    assert compile_condition(longest).evaluate({"s": padding}, {}) is True

    with pytest.raises(ConditionSyntaxError, match=f"at most {MAX_CONDITION_LENGTH}") as caught:
        compile_condition(longest + " ")
    assert_clean_message(str(caught.value))


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("foo > 1", "foo"),
        ("ctx.total > 0", "ctx"),
        ("context.total > limit", "limit"),
        ("result.ok", "result"),
        ("context.items.exists(i, j > 1)", "j"),
        ("steps.a.result.ok && previousSteps.a.result.ok", "previousSteps"),
    ],
)
def test_unknown_variables_are_refused_at_compile_time(source: str, name: str) -> None:
    with pytest.raises(ConditionSyntaxError) as caught:
        compile_condition(source)
    message = str(caught.value)
    # A dotted name may be a qualified identifier, so the checker names all of it.
    assert f"undeclared reference to '{name}" in message
    assert "context and steps" in message
    assert_clean_message(message)


def test_comprehension_variables_are_not_unknown() -> None:
    assert check("context.items.exists(item, item.qty == 2)") is True
    assert check("context.items.all(i, context.tags.exists(t, t != i.sku))") is True


@pytest.mark.parametrize(
    ("source", "type_name"),
    [
        ("1 + 2", "int"),
        ('"yes"', "string"),
        ("[true]", "list"),
        ("{'a': true}", "map"),
        ("null", "null"),
        ("size(context.items)", "int"),
        ("2.5", "double"),
    ],
)
def test_conditions_that_can_never_be_boolean_are_refused(source: str, type_name: str) -> None:
    with pytest.raises(ConditionSyntaxError, match=f"boolean, but it gives {type_name}$"):
        compile_condition(source)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("size(1) > 0", "no matching overload for 'size' applied to '(int)'"),
        ("true == 1", "no matching overload for '==' applied to '(bool, int)'"),
        # Two typed operands must agree; a dynamic value may meet either.
        ("double(context.total) > 1", "'(double, int)'"),
        ("steps == 1", "map(string, dyn)"),
    ],
)
def test_type_errors_the_checker_can_see(source: str, fragment: str) -> None:
    with pytest.raises(ConditionSyntaxError) as caught:
        compile_condition(source)
    assert fragment in str(caught.value)
    assert_clean_message(str(caught.value))


def test_unpaired_surrogates_are_refused() -> None:
    with pytest.raises(ConditionSyntaxError, match="not valid Unicode"):
        compile_condition('context.s == "\ud800"')


# ------------------------------------------------------------------ evaluation errors


@pytest.mark.parametrize(
    ("source", "context", "fragment"),
    [
        ("context.missing > 0", {}, 'no such key: "missing"'),
        ("steps.nope.status == 'completed'", {}, 'no such key: "nope"'),
        ("context.total > 0", {"total": None}, "no matching overload for '>' applied to (null"),
        ("context.total > 0", {"total": "12"}, "no matching overload for '>' applied to (string"),
        ("context.total + 1 > 2", {"total": 1.5}, "applied to (double, int)"),
        ("1 / context.n == 1", {"n": 0}, "divide by zero"),
        ("1 % context.n == 1", {"n": 0}, "modulus by zero"),
        ("context.items[5] == 1", {"items": [1]}, "index=5 size=1"),
        ("context.items[0] == 1", {"items": 1}, "Invalid container type"),
        ("context.s.matches(context.re)", {"s": "a", "re": "("}, "invalid regular expression"),
        ("context.n ? true : false", {"n": 1}, "no matching overload for '?:'"),
        ("!context.n", {"n": 1}, "no matching overload for '!'"),
        ("context.n > 0", {"n": 2**64}, "integer outside the 64-bit range"),
        ("context.n > 0", {"n": -(2**63) - 1}, "integer outside the 64-bit range"),
        ("context.n > 0", {"n": (1, 2)}, "tuple"),
        ("int(context.s) > 0", {"s": "twelve"}, "cannot convert string to int"),
    ],
)
def test_evaluation_errors(source: str, context: Any, fragment: str) -> None:
    with pytest.raises(ConditionEvaluationError) as caught:
        check(source, context, {})
    assert fragment in str(caught.value)
    assert_clean_message(str(caught.value))


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (1, "int"),
        (1.5, "double"),
        ("yes", "string"),
        (None, "null"),
        ([True], "list"),
        ({"a": True}, "map"),
        (2**63, "uint"),  # beyond int64, the binding makes it unsigned
    ],
)
def test_non_boolean_results_fail(value: Any, type_name: str) -> None:
    with pytest.raises(ConditionEvaluationError) as caught:
        check("context.x", {"x": value}, {})
    assert str(caught.value) == f"the condition must evaluate to a boolean, got {type_name}"


def test_evaluation_is_bounded() -> None:
    """A short expression cannot run for long: the iteration budget stops it."""
    digits = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"
    source = "true"
    for depth in range(6):  # a million iterations if nothing stopped it
        source = f"{digits}.all(x{depth}, {source})"
    condition = compile_condition(source)
    started = time.perf_counter()
    with pytest.raises(ConditionEvaluationError, match="fewer than 10,000 iterations") as caught:
        condition.evaluate({}, {})
    assert time.perf_counter() - started < 1
    assert_clean_message(str(caught.value))

    big = {"items": list(range(20_000))}
    with pytest.raises(ConditionEvaluationError, match="iterations"):
        check("context.items.exists(i, i < 0)", big, {})
    assert check("context.items.exists(i, i == 500)", {"items": list(range(1000))}, {})
    assert check("size(context.items) == 20000", big, {})  # no iteration, no budget


def test_none_is_not_released_by_null_results() -> None:
    """The binding's value() of a null drops a reference to None it never took.

    evaluate() must never read a null's value; on Python 3.11 enough stray
    releases deallocate None and abort the interpreter. A leak of one reference
    per call would show as thousands here.
    """
    conditions = [
        compile_condition(source)
        for source in ("context.x", "context.x == null", "context.y.z", "has(context.x)")
    ]
    context = {"x": None, "y": {"z": None}, "l": [None]}

    def run() -> None:
        for condition in conditions:
            with contextlib.suppress(ConditionEvaluationError):
                condition.evaluate(context, {"a": {"status": "skipped", "result": None}})

    for _ in range(100):
        run()
    gc.collect()
    gc.disable()
    try:
        before = sys.getrefcount(None)
        for _ in range(2000):
            run()
        after = sys.getrefcount(None)
    finally:
        gc.enable()
    assert abs(after - before) < 500


# ------------------------------------------------------------------ API


def test_error_classes() -> None:
    assert issubclass(ConditionSyntaxError, ConditionError)
    assert issubclass(ConditionEvaluationError, ConditionError)
    assert issubclass(ConditionError, BatonError)
    assert issubclass(ConditionError, Exception)


def test_library_errors_are_kept_as_the_cause() -> None:
    with pytest.raises(ConditionSyntaxError) as caught:
        compile_condition("context.total >")
    assert caught.value.__cause__ is not None


def test_compile_is_cached() -> None:
    source = 'context.orderId == "cache-me"'
    first = compile_condition(source)
    hits = compile_condition.cache_info().hits
    assert compile_condition(source) is first
    assert compile_condition.cache_info().hits == hits + 1


def test_condition_is_immutable_and_compares_by_source() -> None:
    condition = compile_condition("context.total > 0")
    assert isinstance(condition, Condition)
    assert condition.source == "context.total > 0"
    with pytest.raises(dataclasses.FrozenInstanceError):
        condition.source = "true"  # type: ignore[misc]
    compile_condition.cache_clear()
    again = compile_condition("context.total > 0")
    assert again is not condition
    assert again == condition
    assert hash(again) == hash(condition)
    assert "context.total > 0" in repr(condition)


# ------------------------------------------------------------------ random inputs

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: beyond 64 bits must be an evaluation error, not a crash
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
keys = st.sampled_from(["total", "tags", "items", "x", "y", "a", "ok"]) | st.text(max_size=5)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
step_states = st.fixed_dictionaries(
    {"status": st.sampled_from(["completed", "skipped", "failed"])},
    optional={"result": json_values, "error": json_values},
)
steps_maps = st.dictionaries(
    st.sampled_from(["validate", "charge", "a"]) | st.text(min_size=1, max_size=5),
    step_states,
    max_size=4,
)

EXPRESSIONS = [
    "context.total > 0",
    'steps.validate.result.ok == true && steps.charge.status == "completed"',
    "has(steps.a.result.x)",
    '"vip" in context.tags',
    "size(context.items) >= 2",
    "context.x",
    "context == null",
    "context.x == null || context.y != null",
    "has(context.x) && has(context.x.y)",
    'context.a.startsWith("v") || context.a.matches(context.a)',
    "context.items.exists(i, i > 1)",
    "context.items.all(i, i == null)",
    "context.items.map(i, i).size() == 3",
    "context.total + 1 > 2",
    "context.total / context.x > 1",
    "context.total % 2 == 0",
    "context.tags[0] == 1",
    "size(context) > 0",
    "string(context.total) == '1'",
    "int(context.total) > 1 && double(context.total) < 2.0",
    "type(context.x) == string",
    'steps.exists(k, steps[k].status == "failed" && has(steps[k].error))',
    "steps.a.result == context",
]


@given(source=st.sampled_from(EXPRESSIONS), context=json_values, steps=steps_maps)
def test_random_json_never_breaks_evaluate(source: str, context: Any, steps: Steps) -> None:
    condition = compile_condition(source)
    try:
        result = condition.evaluate(context, steps)
    except ConditionEvaluationError as exc:
        assert_clean_message(str(exc))
    else:
        assert type(result) is bool


CEL_FRAGMENTS = [
    "context",
    "steps",
    ".",
    "x",
    "a",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ":",
    ",",
    "1",
    "2.5",
    "'s'",
    '"t"',
    "true",
    "null",
    "!",
    "has",
    "size",
    ".exists",
    ".all",
    ".map",
    "int",
    "\\",
    "é",
    "1u",
    "b'",
    "@",
    " && ",
    " || ",
    " ? ",
    " == ",
    " < ",
    " + ",
    " / ",
    " in ",
    " ",
]
cel_fragments = st.sampled_from(CEL_FRAGMENTS)


@given(st.lists(cel_fragments, max_size=12).map("".join) | st.text(max_size=30))
def test_random_sources_only_raise_condition_errors(source: str) -> None:
    try:
        condition = compile_condition(source)
    except ConditionSyntaxError as exc:
        assert_clean_message(str(exc))
        return
    try:
        result = condition.evaluate({"x": [1, "a", None], "a": {"x": True}}, STEPS)
    except ConditionEvaluationError as exc:
        assert_clean_message(str(exc))
    else:
        assert type(result) is bool
