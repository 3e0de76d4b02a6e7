"""`when` conditions: CEL expressions over a workflow's ``context`` and ``steps``.

A step's ``when`` is compiled once when the workflow is created (a syntax or type
error is a 422 naming ``steps[i].when``) and evaluated when the step's dependencies
are settled: ``True`` runs the step, ``False`` skips it, and an error fails it. The
server evaluates nothing itself: app/verdicts.py runs ``decide`` in a worker
process, under a time and a memory budget.
docs/conditions.md is the user documentation and records why the CEL runtime is
cel-expr-python (Google's C++ implementation, cel-cpp).

    BatonError
    └── ConditionError              -- any refusal of a condition; the message says why
        ├── ConditionSyntaxError    -- compile_condition: bad syntax, types or names
        └── ConditionEvaluationError -- Condition.evaluate: failed or not a boolean

Messages are one short line for an API client, never a traceback; the library's
own exception is kept as ``__cause__`` for logs.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cel_expr_python import cel

from app.errors import BatonError

__all__ = [
    "MAX_CONDITION_LENGTH",
    "Condition",
    "ConditionCheck",
    "ConditionError",
    "ConditionEvaluationError",
    "ConditionSyntaxError",
    "Verdict",
    "compile_condition",
    "decide",
    "failed_verdict",
]

#: Longest accepted source, in characters (DESIGN.md §3: `when` at most 4096).
MAX_CONDITION_LENGTH = 4096

#: Compiled conditions kept by ``compile_condition``; a server sees few distinct ones.
COMPILE_CACHE_SIZE = 1024

#: cel-cpp's default budget: comprehensions (``all``, ``exists``, ``map``...) may run
#: fewer than this many iterations in total per evaluation. Not configurable through
#: the Python binding; it is what keeps a 4 KiB expression from running for hours.
ITERATION_BUDGET = 10_000

#: cel-cpp's default limit on how deeply an expression may nest (parentheses,
#: operands of one chain of ``+``, member selections...). Not configurable either.
MAX_NESTING = 32

#: Messages longer than this are cut: they end up in problem documents and events.
MAX_MESSAGE_LENGTH = 300

# Declared variables let the checker refuse any other name at compile time. Both are
# dynamic (JSON); `steps` is known to be a map so that `steps == 1` is caught early.
# The environment is configured here once and only read afterwards.
_ENVIRONMENT = cel.NewEnv(
    variables={
        "context": cel.Type.DYN,
        "steps": cel.Type.Map(cel.Type.STRING, cel.Type.DYN),
    }
)


class ConditionError(BatonError):
    """A `when` condition was refused; ``str(error)`` is a one-line explanation."""


class ConditionSyntaxError(ConditionError):
    """The source is not a valid condition (syntax, unknown name, type, length)."""


class ConditionEvaluationError(ConditionError):
    """Evaluating a condition failed, or it produced something other than a boolean."""


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled `when` condition; build it with ``compile_condition``."""

    #: The expression as the user wrote it.
    source: str
    _program: Any = field(repr=False, compare=False)

    def evaluate(self, context: Any, steps: Mapping[str, Mapping[str, Any]]) -> bool:
        """Evaluate against a workflow's ``context`` and the states of the step's ancestors.

        ``context`` is the workflow's JSON context; ``steps`` maps each ancestor's id
        to ``{"status": ..., "result": ...}`` (``"error"`` for a failed one, neither
        for a skipped one). Values are plain JSON: dict, list, str, int, float, bool
        or None.

        Raises ``ConditionEvaluationError`` if evaluation fails (missing key, type
        mismatch, division by zero, iteration budget...) or the result is not a bool.
        """
        # The binding takes only exact JSON types: no other Mapping, and no subclass
        # such as the StepStatus enum a stored status comes back as. The step map
        # is small (one entry per ancestor), so it is copied with plain values.
        data = {
            "context": context,
            "steps": {
                step_id: {key: _plain(value) for key, value in state.items()}
                for step_id, state in steps.items()
            },
        }
        try:
            value = self._program.eval(data=data)
            kind = value.type()
            # Only a BOOL's value is read: the binding's value() of a null result
            # drops a reference to None it never took (0.1.3), which in time crashes
            # the interpreter. Errors are read as text below, which is safe.
            if kind == cel.Type.BOOL:
                return bool(value.value())
            if kind == cel.Type.ERROR:
                message = _evaluation_message(str(value.value()))
            else:
                message = f"the condition must evaluate to a boolean, got {_type_name(kind)}"
        except Exception as exc:
            # The binding raises RuntimeError for some failures (iteration budget,
            # unreadable input) and TypeError for inputs it cannot take at all.
            raise ConditionEvaluationError(_evaluation_message(str(exc))) from exc
        raise ConditionEvaluationError(message)


#: What deciding a `when` gives: True runs the step, False skips it, and a message
#: says why it could not be evaluated (the step fails with ``condition_error``).
Verdict = bool | str


@dataclass(frozen=True, slots=True)
class ConditionCheck:
    """A step's `when` to decide, with what it reads."""

    step_id: str
    source: str
    #: The workflow's context.
    context: Any
    #: The step's ancestors, as the ``steps`` variable shows them.
    steps: Mapping[str, Mapping[str, Any]]


def failed_verdict(reason: str) -> str:
    """The step error message of a `when` that could not be evaluated."""
    return f"`when` could not be evaluated: {reason}"


def decide(source: str, context: Any, steps: Mapping[str, Mapping[str, Any]]) -> Verdict:
    """Evaluate ``source`` here and now: in the condition worker, and in unit tests.

    The server never calls this on its event loop: an expression over a large input
    can take seconds and gigabytes (app/verdicts.py runs it under a budget).
    """
    try:
        return compile_condition(source).evaluate(context, steps)
    except ConditionError as exc:
        return failed_verdict(str(exc))


@functools.lru_cache(maxsize=COMPILE_CACHE_SIZE)
def compile_condition(source: str) -> Condition:
    """Parse and type-check ``source``; cached, so call it freely per evaluation.

    The only variables are ``context`` and ``steps``. Raises ``ConditionSyntaxError``
    for an empty source, one over ``MAX_CONDITION_LENGTH`` characters, a syntax error,
    an unknown name, a type error the checker can see (``size(1)``, ``1.5 > 1``), an
    expression nested too deeply, or one that can only produce a non-boolean.
    """
    if len(source) > MAX_CONDITION_LENGTH:
        raise ConditionSyntaxError(
            f"the condition is {len(source)} characters long; "
            f"at most {MAX_CONDITION_LENGTH} are allowed"
        )
    if not source.strip():
        raise ConditionSyntaxError("the condition is empty")
    try:
        # The binding cannot take lone surrogates (they are not encodable text).
        source.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConditionSyntaxError("the condition is not valid Unicode text") from exc
    try:
        program = _ENVIRONMENT.compile(source)
        kind = program.return_type()
    except Exception as exc:
        raise ConditionSyntaxError(_compile_message(str(exc))) from exc
    if kind != cel.Type.BOOL and kind != cel.Type.DYN:
        raise ConditionSyntaxError(
            f"the condition must evaluate to a boolean, but it gives {_type_name(kind)}"
        )
    return Condition(source, program)


def _plain(value: Any) -> Any:
    """``value`` as its exact str, int or float type if it is a subclass (an enum)."""
    if isinstance(value, str) and type(value) is not str:
        return str.__str__(value)
    if isinstance(value, int) and type(value) not in (int, bool):
        return int(value)
    if isinstance(value, float) and type(value) is not float:
        return float(value)
    return value


# ------------------------------------------------------------------ messages

# cel-cpp reports an absl::Status as "CODE: text [CODE]"; the code means nothing to users.
_STATUS_PREFIX = re.compile(r"^[A-Z_]+: ")
_STATUS_SUFFIX = re.compile(r"\s*\[[A-Z_]+\]\s*$")
# One compile problem: "ERROR: <input>:LINE:COLUMN: text", then two lines of snippet.
_LOCATED = re.compile(r"^ERROR: <input>:(-?\d+):(-?\d+): (.*)$")
# Operators are named like functions ("_>_", "_==_"); show them as written.
_OPERATOR = re.compile(r"'?\b_([=!<>+\-*/%&|]{1,2})_\b'?")
# The parser lists every token it could have accepted: long, and no help to a user.
_EXPECTING = re.compile(r" expecting (\{[^}]*\}|\S+)")
# Ends a message that may quote the whole offending input: keep only the type.
_NON_JSON = re.compile(r"^Non-CEL value type for .*: (\w+)\.?$", re.DOTALL)
_INTERNAL_NAMES = {"<jump_condition>": "?:", "@in": "in"}
_NO_OVERLOAD = re.compile(r"No matching overloads found : ([^(]+)(?:\((.*)\))?$")


def _compile_message(text: str) -> str:
    """One line from a compile failure: each problem with its line and column."""
    problems: list[str] = []
    undeclared = False
    for line in _strip_status(text).splitlines():
        if line.startswith(" |"):
            continue  # the snippet with a caret, which the position already gives
        located = _LOCATED.match(line)
        if located is None:
            problem = line.strip()
        else:
            row, column, problem = located.groups()
            problem = problem.replace(" (in container '')", "")
            problem = _EXPECTING.sub("", problem)
            problem = problem.replace("mismatched input '<EOF>'", "unexpected end of expression")
            problem = problem.replace("'<EOF>'", "end of expression")
            undeclared = undeclared or problem.startswith("undeclared reference")
            if int(row) > 0 and int(column) > 0:
                problem = f"line {row}, column {column}: {problem}"
        if "recursion" in problem.lower():
            problem = f"the expression is nested too deeply (at most {MAX_NESTING} levels)"
        if problem and problem not in problems:
            problems.append(problem)
    message = "; ".join(problems) or "invalid expression"
    if undeclared:
        message += " (the variables are context and steps)"
    return _shorten(_OPERATOR.sub(r"'\1'", message))


def _evaluation_message(text: str) -> str:
    """One line from a runtime failure, in the user's terms where the library's are odd."""
    message = _strip_status(text)
    if "Iteration budget exceeded" in message:
        return (
            "evaluation stopped: all(), exists(), map() and filter() may run "
            f"fewer than {ITERATION_BUDGET:,} iterations in total"
        )
    if message.startswith("Integer value") and "out of range" in message:
        return "the input holds an integer outside the 64-bit range"
    if "basic_string" in message:
        return "the input holds text that is not valid Unicode"
    foreign = _NON_JSON.search(message)
    if foreign is not None:
        return f"the input holds a value of type {foreign.group(1)}, which is not JSON"
    no_overload = _NO_OVERLOAD.match(message)
    if no_overload is not None:
        # Runtime type names are C++'s (int64, uint64); the checker's are CEL's.
        name, arguments = no_overload.groups()
        name = _INTERNAL_NAMES.get(name, name)
        if not name[0].isalpha():
            name = name.replace("_", "")  # an operator: "_>_" is '>', "!_" is '!'
        message = f"no matching overload for '{name}'"
        if arguments:
            message += f" applied to ({arguments.replace('int64', 'int')})"
    message = message.replace("Key not found in map : ", "no such key: ")
    return _shorten(_OPERATOR.sub(r"'\1'", message))


def _strip_status(text: str) -> str:
    return _STATUS_SUFFIX.sub("", _STATUS_PREFIX.sub("", text.strip()))


def _shorten(message: str) -> str:
    """Single line, at most ``MAX_MESSAGE_LENGTH`` characters."""
    message = " ".join(message.split())
    if len(message) > MAX_MESSAGE_LENGTH:
        message = message[: MAX_MESSAGE_LENGTH - 1].rstrip() + "…"
    return message


def _type_name(kind: Any) -> str:
    """A CEL type as users know it: ``int``, ``string``, ``list``, ``map``, ``null``."""
    name = str(kind.name()).lower()
    if name.startswith(("list", "map")):
        return name.partition("<")[0]
    return "null" if name in ("null", "null_type") else name
