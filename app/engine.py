"""The pure workflow engine: statuses, answer classification, retry decisions, readiness.

Nothing here awaits, touches the database or speaks HTTP. The store hands the
engine plain values, the engine answers with decisions, and the store applies
them as conditional updates. That keeps every rule of DESIGN.md §4–§5 in one
place where it can be tested exhaustively.
"""

from __future__ import annotations

import email.utils
import enum
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

MAX_RESULT_BYTES = 1024 * 1024
#: How much of an answer's body the attempt log keeps.
RESPONSE_EXCERPT_CHARS = 2048


class WorkflowStatus(enum.StrEnum):
    PENDING = "pending"  #: accepted, not started yet
    RUNNING = "running"  #: steps are being dispatched
    COMPLETED = "completed"  #: every step settled and none failed the workflow
    FAILED = "failed"  #: a step failed for good (or the workflow timed out)
    CANCELLED = "cancelled"  #: cancelled through the API
    COMPENSATING = "compensating"  #: saga: compensations are running
    COMPENSATED = "compensated"  #: saga: every compensation succeeded
    COMPENSATION_FAILED = "compensation_failed"  #: saga: a compensation failed for good


TERMINAL_WORKFLOW_STATUSES = frozenset(
    {
        WorkflowStatus.COMPLETED,
        WorkflowStatus.FAILED,
        WorkflowStatus.CANCELLED,
        WorkflowStatus.COMPENSATED,
        WorkflowStatus.COMPENSATION_FAILED,
    }
)


class StepStatus(enum.StrEnum):
    PENDING = "pending"  #: waiting for its dependencies
    RUNNING = "running"  #: request queued or in flight, or awaiting an async callback
    RETRYING = "retrying"  #: waiting for its next attempt's due time
    COMPLETED = "completed"  #: answered successfully; its result is stored
    FAILED = "failed"  #: failed after its last attempt
    SKIPPED = "skipped"  #: its `when` condition was false
    CANCELLED = "cancelled"  #: can no longer run (the workflow failed or was cancelled)


SETTLED_STEP_STATUSES = frozenset(
    {StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)
#: Steps that have been dispatched and not settled.
ACTIVE_STEP_STATUSES = frozenset({StepStatus.RUNNING, StepStatus.RETRYING})


class DeliveryKind(enum.StrEnum):
    STEP = "step"  #: a step's own request
    COMPENSATION = "compensation"  #: saga: undo a completed step
    ON_COMPLETE = "on_complete"  #: the workflow's onComplete callback
    ON_ERROR = "on_error"  #: the workflow's onError callback


CALLBACK_KINDS = frozenset({DeliveryKind.ON_COMPLETE, DeliveryKind.ON_ERROR})


class StepErrorCode(enum.StrEnum):
    HTTP_ERROR = "http_error"  #: the handler answered a non-2xx status
    TIMEOUT = "timeout"  #: no answer within the step's timeout
    CONNECTION_ERROR = "connection_error"  #: the request could not be sent
    HANDLER_ERROR = "handler_error"  #: the handler said `success: false`
    INVALID_RESPONSE = "invalid_response"  #: the answer could not be understood
    RESULT_TOO_LARGE = "result_too_large"  #: the result is over 1 MiB
    CONDITION_ERROR = "condition_error"  #: the step's `when` could not be evaluated
    CANCELLED = "cancelled"  #: the step will not run (the message says why)


class WorkflowErrorCode(enum.StrEnum):
    STEP_FAILED = "step_failed"
    WORKFLOW_TIMEOUT = "workflow_timeout"
    CANCELLED = "cancelled"


class Outcome(enum.StrEnum):
    COMPLETED = "completed"  #: the attempt succeeded
    FAILED = "failed"  #: the attempt failed (maybe retryable)
    ASYNC = "async"  #: the handler accepted the work and will call back


class OnFailure(enum.StrEnum):
    """What a step failing for good does to the steps that depend on it (per step).

    BullMQ's flow options, by their names there: ``failParentOnFailure``,
    ``ignoreDependencyOnFailure``, ``removeDependencyOnFailure`` and
    ``continueParentOnFailure``. Only ``fail`` dooms the workflow (and so only
    ``fail`` leads to saga compensation).
    """

    FAIL = "fail"  #: the workflow is doomed (DESIGN §5); the default
    IGNORE = "ignore"  #: dependents proceed and see it as failed (``continueOnFailure``)
    REMOVE = "remove"  #: dependents proceed; it is absent from their ``previousSteps``
    CONTINUE = "continue"  #: its direct dependents start at once, not waiting for the rest


class Backoff(enum.StrEnum):
    EXPONENTIAL = "exponential"
    FIXED = "fixed"
    LINEAR = "linear"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how often a failed attempt is tried again (DESIGN §3 defaults)."""

    max_attempts: int = 3
    backoff: Backoff = Backoff.EXPONENTIAL
    delay: float = 1.0
    max_delay: float = 300.0
    jitter: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetryPolicy:
        return cls(
            max_attempts=int(data["maxAttempts"]),
            backoff=Backoff(data["backoff"]),
            delay=float(data["delay"]),
            max_delay=float(data["maxDelay"]),
            jitter=bool(data["jitter"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "maxAttempts": self.max_attempts,
            "backoff": self.backoff.value,
            "delay": self.delay,
            "maxDelay": self.max_delay,
            "jitter": self.jitter,
        }


#: Callbacks (onComplete / onError): 5 attempts, exponential from 1 s (DESIGN §5).
CALLBACK_RETRY_POLICY = RetryPolicy(max_attempts=5, delay=1.0, max_delay=60.0, jitter=True)
#: A callback request gets this long to answer.
CALLBACK_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class StepError:
    code: StepErrorCode
    message: str
    http_status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, "httpStatus": self.http_status}


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one delivery attempt came to, before any retry decision."""

    outcome: Outcome
    result: Any = None
    error: StepError | None = None
    #: Whether trying again could help (5xx yes, 404 no, `"retry": false` no).
    retryable: bool = False
    #: Seconds the handler asked us to wait (Retry-After), if it did.
    retry_after: float | None = None
    http_status: int | None = None
    excerpt: str | None = None

    @classmethod
    def failure(
        cls,
        code: StepErrorCode,
        message: str,
        *,
        retryable: bool,
        http_status: int | None = None,
        retry_after: float | None = None,
        excerpt: str | None = None,
    ) -> AttemptResult:
        return cls(
            outcome=Outcome.FAILED,
            error=StepError(code, message, http_status),
            retryable=retryable,
            retry_after=retry_after,
            http_status=http_status,
            excerpt=excerpt,
        )


_RETRYABLE_STATUSES = frozenset({408, 425, 429})


def classify_answer(
    status: int,
    body: bytes,
    *,
    retry_after: str | None = None,
    content_type: str | None = None,
    now: datetime | None = None,
    max_result_bytes: int = MAX_RESULT_BYTES,
    content_length: str | None = None,
) -> AttemptResult:
    """Turn a handler's HTTP answer into an attempt result (the table in DESIGN §4).

    Whatever the bytes, the result can be stored: text taken from the answer (the
    excerpt, an error message) has its NUL characters replaced, and a result that
    holds one is an ``invalid_response`` (PostgreSQL cannot store NUL in text or
    JSON, and a result is not rewritten behind the handler's back).

    ``body`` may be cut short past ``max_result_bytes``; ``content_length`` (the
    answer's header) then tells its real size.
    """
    excerpt = _excerpt(body)
    if 200 <= status < 300:
        return _classify_success(
            status, body, excerpt, max_result_bytes, content_type, content_length
        )
    if status in _RETRYABLE_STATUSES or status >= 500:
        return AttemptResult.failure(
            StepErrorCode.HTTP_ERROR,
            f"handler answered HTTP {status}",
            retryable=True,
            http_status=status,
            retry_after=parse_retry_after(retry_after, now=now),
            excerpt=excerpt,
        )
    if 300 <= status < 400:
        return AttemptResult.failure(
            StepErrorCode.HTTP_ERROR,
            f"handler answered HTTP {status}; redirects are not followed",
            retryable=False,
            http_status=status,
            excerpt=excerpt,
        )
    return AttemptResult.failure(
        StepErrorCode.HTTP_ERROR,
        f"handler answered HTTP {status}",
        retryable=False,
        http_status=status,
        excerpt=excerpt,
    )


def _says_json(content_type: str | None) -> bool:
    """Whether a Content-Type names JSON (``application/json``, ``…+json``)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _answer_size(content_length: str | None, read_past: int) -> str:
    """The size of an answer read only past ``read_past`` bytes: as declared, if it says."""
    declared = content_length.strip() if content_length else ""
    if declared.isdigit() and int(declared) > read_past:
        return f"{int(declared)} bytes"
    return f"more than {read_past} bytes"


def _classify_success(
    status: int,
    body: bytes,
    excerpt: str | None,
    max_result_bytes: int,
    content_type: str | None = None,
    content_length: str | None = None,
) -> AttemptResult:
    if len(body) > max_result_bytes:
        return AttemptResult.failure(
            StepErrorCode.RESULT_TOO_LARGE,
            f"the answer is {_answer_size(content_length, max_result_bytes)}; "
            f"results are limited to {max_result_bytes} bytes",
            retryable=False,
            http_status=status,
            excerpt=excerpt,
        )
    document: Any = None
    if body.strip():
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if _says_json(content_type):
                # It says JSON and is not (a truncated or garbled body): try again.
                return AttemptResult.failure(
                    StepErrorCode.INVALID_RESPONSE,
                    f"the answer says it is JSON but does not parse: {exc.msg}",
                    retryable=True,
                    http_status=status,
                    excerpt=excerpt,
                )
            # A 2xx with a body that is not JSON still means "done" (DESIGN §4).
            return AttemptResult(Outcome.COMPLETED, None, http_status=status, excerpt=excerpt)

    may_hold_nul = _NUL_ESCAPE in body
    if not isinstance(document, dict):
        return _completed(document, status, excerpt, may_hold_nul)
    if status == 202 and document.get("async") is True:
        return AttemptResult(Outcome.ASYNC, None, http_status=status, excerpt=excerpt)
    if "success" not in document:
        return _completed(document, status, excerpt, may_hold_nul)
    success = document["success"]
    if success is True:
        return _completed(document.get("result"), status, excerpt, may_hold_nul)
    if success is False:
        message = document.get("error")
        if not isinstance(message, str):
            message = "handler reported failure" if message is None else _compact(message)
        message = storable_text(message)
        return AttemptResult.failure(
            StepErrorCode.HANDLER_ERROR,
            message,
            retryable=document.get("retry") is not False,
            http_status=status,
            excerpt=excerpt,
        )
    return AttemptResult.failure(
        StepErrorCode.INVALID_RESPONSE,
        "`success` must be true or false",
        retryable=False,
        http_status=status,
        excerpt=excerpt,
    )


def _completed(result: Any, status: int, excerpt: str | None, may_hold_nul: bool) -> AttemptResult:
    if may_hold_nul and _holds_nul(result):
        return AttemptResult.failure(
            StepErrorCode.INVALID_RESPONSE,
            "the result holds a NUL character (\\u0000), which cannot be stored",
            retryable=False,
            http_status=status,
            excerpt=excerpt,
        )
    return AttemptResult(Outcome.COMPLETED, result, http_status=status, excerpt=excerpt)


def classify_timeout(timeout: float) -> AttemptResult:
    return AttemptResult.failure(
        StepErrorCode.TIMEOUT, f"no answer within {timeout:g} s", retryable=True
    )


def classify_malformed_answer(message: str) -> AttemptResult:
    """The target answered with something that is not valid HTTP (DESIGN §4: retried)."""
    return AttemptResult.failure(
        StepErrorCode.INVALID_RESPONSE,
        f"the answer is not valid HTTP: {message}",
        retryable=True,
    )


def classify_connection_error(message: str) -> AttemptResult:
    return AttemptResult.failure(StepErrorCode.CONNECTION_ERROR, message, retryable=True)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff_delay(
    policy: RetryPolicy,
    failed_attempt: int,
    *,
    retry_after: float | None = None,
    rand: Callable[[], float] | None = None,
) -> float:
    """Seconds to wait before the attempt after ``failed_attempt`` (1-based).

    fixed: ``delay``; linear: ``delay·n``; exponential: ``delay·2^(n-1)``; capped by
    ``maxDelay``; with jitter a random fraction of that (full jitter). A handler's
    Retry-After is honoured — we never come back sooner than it asked — but is
    capped by ``maxDelay`` too.
    """
    n = max(1, failed_attempt)
    if policy.backoff is Backoff.FIXED:
        base = policy.delay
    elif policy.backoff is Backoff.LINEAR:
        base = policy.delay * n
    else:
        # Cap the exponent: 2**1100 overflows a float long before maxDelay matters.
        base = policy.delay * math.pow(2, min(n - 1, 64))
    wait = min(base, policy.max_delay)
    if policy.jitter and rand is not None:
        wait *= rand()
    if retry_after is not None:
        wait = max(wait, min(retry_after, policy.max_delay))
    return wait


@dataclass(frozen=True, slots=True)
class AttemptDecision:
    """What to do with a step (or callback) after one attempt."""

    #: The step's next status: COMPLETED, RETRYING, FAILED or RUNNING (async).
    status: StepStatus
    result: Any = None
    error: StepError | None = None
    #: Seconds until the next attempt, when ``status`` is RETRYING.
    retry_in: float | None = None


def decide_after_attempt(
    attempt_result: AttemptResult,
    attempt: int,
    policy: RetryPolicy,
    *,
    may_retry: bool = True,
    rand: Callable[[], float] | None = None,
) -> AttemptDecision:
    """Complete, retry later, wait for a callback, or fail for good.

    ``may_retry`` is false once the workflow is doomed or cancelled: an answer
    still counts, but nothing new is started because of it.
    """
    if attempt_result.outcome is Outcome.COMPLETED:
        return AttemptDecision(StepStatus.COMPLETED, result=attempt_result.result)
    if attempt_result.outcome is Outcome.ASYNC:
        return AttemptDecision(StepStatus.RUNNING)
    if attempt_result.retryable and may_retry and attempt < policy.max_attempts:
        delay = backoff_delay(policy, attempt, retry_after=attempt_result.retry_after, rand=rand)
        return AttemptDecision(StepStatus.RETRYING, error=attempt_result.error, retry_in=delay)
    return AttemptDecision(StepStatus.FAILED, error=attempt_result.error)


def satisfies_dependents(status: StepStatus, on_failure: OnFailure) -> bool:
    """Whether a settled step lets its dependents proceed (DESIGN §5).

    A step skipped by ``when`` always does: a skip is never a failure.
    """
    return status in (StepStatus.COMPLETED, StepStatus.SKIPPED) or (
        status is StepStatus.FAILED and on_failure is not OnFailure.FAIL
    )


def dooms_workflow(status: StepStatus, on_failure: OnFailure) -> bool:
    """A step that failed for good with ``onFailure: fail`` dooms its workflow."""
    return status is StepStatus.FAILED and on_failure is OnFailure.FAIL


def starts_dependents_at_once(status: StepStatus, on_failure: OnFailure) -> bool:
    """``onFailure: continue``: the failure makes its direct dependents ready at once."""
    return status is StepStatus.FAILED and on_failure is OnFailure.CONTINUE


def ancestor_state(
    status: str, result: Any, error: Any, on_failure: str | None = None
) -> dict[str, Any]:
    """A step's state as ``previous_steps`` reads it; a failed ``onFailure: remove`` step
    is marked removed (absent from its dependents' ``previousSteps``)."""
    state = {"status": status, "result": result, "error": error}
    if status == StepStatus.FAILED and on_failure == OnFailure.REMOVE:
        state["removed"] = True
    return state


def callback_kind_for(status: WorkflowStatus) -> DeliveryKind | None:
    """Which callback a workflow that reached ``status`` owes (DESIGN §5)."""
    if status is WorkflowStatus.COMPLETED:
        return DeliveryKind.ON_COMPLETE
    if status in (
        WorkflowStatus.FAILED,
        WorkflowStatus.COMPENSATED,
        WorkflowStatus.COMPENSATION_FAILED,
        WorkflowStatus.CANCELLED,
    ):
        return DeliveryKind.ON_ERROR
    return None


def workflow_error(
    code: WorkflowErrorCode, step_id: str | None, step_error: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The workflow's `error` document: {code, message, stepId}."""
    if code is WorkflowErrorCode.STEP_FAILED:
        detail = (step_error or {}).get("message")
        message = f"step '{step_id}' failed" + (f": {detail}" if detail else "")
    elif code is WorkflowErrorCode.WORKFLOW_TIMEOUT:
        message = "the workflow did not finish within its timeout"
    else:
        message = "the workflow was cancelled"
    return {"code": code.value, "message": message, "stepId": step_id}


def previous_steps(
    ancestors: Iterable[str], states: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The `previousSteps` map sent to a step: every transitive ancestor (DESIGN §4).

    ``states`` maps step id to {"status", "result", "error"} as stored
    (``ancestor_state``); a failed step whose ``onFailure`` is ``remove`` is left out.
    """
    out: dict[str, dict[str, Any]] = {}
    for step_id in ancestors:
        state = states.get(step_id)
        if state is None or state.get("removed"):
            continue
        status = state["status"]
        if status == StepStatus.COMPLETED:
            out[step_id] = {"status": status, "result": state.get("result")}
        elif status == StepStatus.FAILED:
            out[step_id] = {"status": status, "error": state.get("error")}
        else:
            out[step_id] = {"status": status}
    return out


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z``, millisecond precision (the wire format for times)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _excerpt(body: bytes) -> str | None:
    if not body:
        return None
    return storable_text(body[:RESPONSE_EXCERPT_CHARS].decode("utf-8", errors="replace"))


#: How a NUL character can appear in valid JSON text (it cannot appear raw).
_NUL_ESCAPE = b"\\u0000"


def storable_text(text: str) -> str:
    """``text`` with NUL characters replaced by U+FFFD (PostgreSQL refuses NUL in text)."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _holds_nul(value: Any) -> bool:
    """Whether a parsed JSON value has a NUL character in any string or key."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    return True
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _compact(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()[:1000]
    except TypeError:
        return repr(value)[:1000]
