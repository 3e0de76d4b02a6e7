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

import asyncio
import base64
import functools
import hashlib
import logging
import re
import secrets
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from types import SimpleNamespace
from typing import Any, TypeVar, cast

import asyncpg
import orjson
from starlette.datastructures import Secret
from tortoise import fields
from tortoise.exceptions import DBConnectionError, IntegrityError, OperationalError
from tortoise.expressions import Q
from tortoise.functions import Count
from tortoise.models import Model
from tortoise.transactions import in_transaction

from app import dag
from app.engine import (
    CALLBACK_KINDS,
    CALLBACK_RETRY_POLICY,
    CALLBACK_TIMEOUT,
    TERMINAL_WORKFLOW_STATUSES,
    AttemptDecision,
    AttemptResult,
    Backoff,
    DeliveryKind,
    RetryPolicy,
    StepStatus,
    WorkflowErrorCode,
    WorkflowStatus,
    classify_answer,
    decide_after_attempt,
    iso,
    previous_steps,
)
from app.errors import Conflict, Gone, NotFound, StoreError, TransitionRejected
from app.keys import generate_api_key, hash_api_key, key_prefix, new_key_id
from app.machine import (
    CompensationStatus,
    DeliveryView,
    Effects,
    Machine,
    StepState,
    WorkflowState,
    outcome_lists,
)
from app.machine import Conflict as MachineConflict
from app.machine import Event as MachineEvent
from app.models import (
    ApiKey,
    Attempt,
    Delivery,
    Event,
    NamespaceSecret,
    ServerSecret,
    Step,
    Workflow,
)
from app.notify import CHANNEL as NOTIFY_CHANNEL
from app.schemas import ID_PATTERN, WorkflowCreate
from app.tenants import (
    DEFAULT_NAMESPACE,
    check_namespace,
    namespace_of,
    public_id,
    scoped_id,
    scoped_idempotency_key,
)
from app.tokens import CallbackClaim
from baton.signing import decode_secret

log = logging.getLogger("baton.store")

T = TypeVar("T")

#: How many workflow graphs (step ids and edges, immutable once created) stay cached.
GRAPH_CACHE_STEPS = 200_000
LIST_LIMIT_DEFAULT = 50
LIST_LIMIT_MAX = 500
_ID = re.compile(ID_PATTERN)
#: A key's last_used_at is written at most this often (seconds) by one process.
KEY_USE_RESOLUTION = 60.0
#: What the driver raises when the database cannot be reached or answer.
_UNAVAILABLE = (
    OperationalError,
    DBConnectionError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


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
    #: For compensations: the step being undone and its result.
    compensating: dict[str, Any] | None = None
    #: An async step whose deadline passed: settle as a timeout, send nothing.
    expired: bool = False
    #: Claimed again after another process's lease ran out (same webhook-id).
    takeover: bool = False
    #: When the delivery fell due (epoch seconds), for the scheduling-delay metric.
    due_at: float = 0.0
    #: The workflow's timeout: how long a step request's callback token is accepted.
    workflow_timeout: float | None = None


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
    #: Deliveries this transaction made due and claimed for the caller to send now.
    jobs: list[Job] = field(default_factory=list)


@dataclass(slots=True)
class _Handoff:
    """How many newly due step requests a settle may claim for its own process at once.

    Claiming them in the transaction that made them due saves the dispatcher a claim
    transaction per hop. The rows are leased like any claim: if this process dies
    before sending, the lease runs out and any process sends them again.
    """

    remaining: int
    lease_seconds: float
    jobs: list[Job] = field(default_factory=list)
    #: Requests made due that were not claimed here: someone must claim them.
    left_due: bool = False
    capacity: int = field(init=False)

    def __post_init__(self) -> None:
        self.capacity = self.remaining

    def reset(self) -> None:
        """Back to its first state (before a transaction runs again)."""
        self.remaining = self.capacity
        self.jobs = []
        self.left_due = False


@dataclass(slots=True)
class _PendingCreate:
    """A create waiting to be inserted with the others that arrived meanwhile."""

    spec: WorkflowCreate
    workflow_id: str
    request_hash: str
    idempotency_key: str | None
    budget: _Handoff
    #: The status document, or the exception the insert raised.
    future: asyncio.Future[dict[str, Any]]


def _settle_future(future: asyncio.Future[Any], outcome: Any) -> None:
    """Resolve ``future`` with a result or an exception, unless its caller is gone."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


@dataclass(slots=True)
class _Graph:
    """A workflow's DAG, immutable once created, cached per process."""

    depends_on: dict[str, list[str]]
    dependents: dict[str, list[str]] = field(default_factory=dict)
    _positions: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if not self.dependents:
            self.dependents = dag.dependents_of(self.depends_on)

    @property
    def size(self) -> int:
        return len(self.depends_on)

    @property
    def positions(self) -> dict[str, int]:
        if self._positions is None:
            self._positions = dag.positions(self.depends_on)
        return self._positions


@dataclass(slots=True)
class _Tx:
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


# --------------------------------------------------------------------------- store


class Store:
    """Domain operations over the database; one instance per server process."""

    def __init__(self, *, owner: str | None = None) -> None:
        #: Identifies this process in leases.
        self.owner = owner or f"baton-{uuid.uuid4().hex[:12]}"
        self._graphs: OrderedDict[str, _Graph] = OrderedDict()
        self._graph_steps = 0
        #: Events written by this process, by type (for metrics). A transaction that
        #: loses a race and runs again is counted once per run.
        self.event_tally: Counter[str] = Counter()
        #: Creates waiting for the task that inserts them together.
        self._creates: list[_PendingCreate] = []
        self._creating: asyncio.Task[None] | None = None
        #: API key id -> when this process last wrote its last_used_at (monotonic).
        self._key_use: dict[str, float] = {}

    # ----------------------------------------------------------------- health

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        try:
            await Workflow.filter(id="").exists()
        except (OperationalError, OSError) as exc:
            raise StoreError(f"database unreachable: {exc}") from exc

    async def server_secret(self, name: str, new_value: str | None = None) -> str:
        """A secret shared by every process on this database, created on first use.

        ``new_value`` is stored if there is none yet (a random one when None); the
        caller can so hide it from logs before the insert is logged.
        """
        row = await ServerSecret.get_or_none(name=name)
        if row is None:
            try:
                row = await ServerSecret.create(
                    name=name,
                    value=new_value or secrets.token_urlsafe(32),
                    created_at=utcnow(),
                )
            except IntegrityError:
                row = await ServerSecret.get(name=name)
        return row.value

    # ----------------------------------------------------------------- tenants

    async def authenticate(self, key: str) -> str | None:
        """The namespace of a stored, unrevoked API key, or None; looked up by its hash.

        Asked on every request (no cache), so a revoked key is refused at once by
        every process. Raises StoreError when the database cannot answer.
        """
        try:
            row = (
                await ApiKey.filter(key_hash=hash_api_key(key), revoked_at__isnull=True)
                .first()
                .values_list("id", "namespace")
            )
        except _UNAVAILABLE as exc:
            raise StoreError(f"could not check the API key: {type(exc).__name__}") from exc
        if row is None:
            return None
        key_id, namespace = row
        await self._note_key_use(str(key_id))
        return str(namespace)

    async def _note_key_use(self, key_id: str) -> None:
        now = time.monotonic()
        if now - self._key_use.get(key_id, float("-inf")) < KEY_USE_RESOLUTION:
            return
        self._key_use[key_id] = now
        try:
            await ApiKey.filter(id=key_id).update(last_used_at=utcnow())
        except _UNAVAILABLE as exc:
            # Bookkeeping only: never fail the request over it.
            log.warning("could not record the use of API key %s: %s", key_id, exc)

    async def create_api_key(
        self, namespace: str, *, signing_secrets: Sequence[Secret] = ()
    ) -> tuple[ApiKeyInfo, Secret]:
        """A new API key of ``namespace``: its record, and the key itself (shown once).

        Only the key's hash is stored. ``signing_secrets`` are added to the namespace's
        own secrets in the same transaction. ValueError for an invalid namespace name or
        secrets that ``set_namespace_secrets`` refuses.
        """
        _check_secrets(namespace, signing_secrets)
        key = generate_api_key()
        row = ApiKey(
            id=new_key_id(),
            namespace=namespace,
            key_hash=hash_api_key(key),
            prefix=key_prefix(key),
            created_at=utcnow(),
        )
        new_secrets = await self._new_secret_rows(namespace, signing_secrets, replace=False)
        async with in_transaction():
            await row.save()
            if new_secrets:
                await NamespaceSecret.bulk_create(new_secrets)
        return _key_info(row), Secret(key)

    async def list_api_keys(self, namespace: str | None = None) -> list[ApiKeyInfo]:
        """Every stored key (of one namespace, if given), oldest first, without hashes."""
        query = ApiKey.all() if namespace is None else ApiKey.filter(namespace=namespace)
        return [_key_info(row) for row in await query.order_by("created_at", "id")]

    async def revoke_api_key(self, key_id: str) -> tuple[ApiKeyInfo, bool] | None:
        """Revoke a key: (its record, whether this call revoked it), or None if unknown."""
        revoked = await ApiKey.filter(id=key_id, revoked_at__isnull=True).update(
            revoked_at=utcnow()
        )
        row = await ApiKey.get_or_none(id=key_id)
        if row is None:
            return None
        return _key_info(row), bool(revoked)

    async def namespace_signing_secrets(self, namespace: str) -> list[Secret]:
        """A namespace's own signing secrets, oldest first (empty: it uses the global ones)."""
        rows = (
            await NamespaceSecret.filter(namespace=namespace)
            .order_by("id")
            .values_list("secret", flat=True)
        )
        return [Secret(str(secret)) for secret in rows]

    async def namespace_secret_info(self, namespace: str) -> list[SecretInfo]:
        """A namespace's signing secrets as fingerprints and creation times (never the secret)."""
        rows = await NamespaceSecret.filter(namespace=namespace).order_by("id")
        return [_secret_info(row) for row in rows]

    async def set_namespace_secrets(
        self, namespace: str, secrets_: Sequence[Secret], *, replace: bool
    ) -> list[SecretInfo]:
        """Add signing secrets to a namespace, or ``replace`` its secrets with them (an empty
        list then clears them: the namespace signs with the global secrets again).

        ValueError for an invalid namespace name, the default namespace (it signs with
        BATON_SIGNING_SECRETS), or a malformed secret.
        """
        _check_secrets(namespace, secrets_)
        new_secrets = await self._new_secret_rows(namespace, secrets_, replace=replace)
        # Writes only inside the transaction: on SQLite a transaction that reads before
        # writing fails when a server process writes in between.
        async with in_transaction():
            if replace:
                await NamespaceSecret.filter(namespace=namespace).delete()
            if new_secrets:
                await NamespaceSecret.bulk_create(new_secrets)
        return await self.namespace_secret_info(namespace)

    async def _new_secret_rows(
        self, namespace: str, secrets_: Sequence[Secret], *, replace: bool
    ) -> list[NamespaceSecret]:
        """Rows for the secrets the namespace does not have yet (all of them on replace)."""
        known: set[str] = set()
        if not replace and secrets_:
            stored = await NamespaceSecret.filter(namespace=namespace).values_list(
                "secret", flat=True
            )
            known = {str(value) for value in stored}
        now = utcnow()
        rows = []
        for secret in secrets_:
            value = str(secret)
            if value not in known:
                known.add(value)
                rows.append(NamespaceSecret(namespace=namespace, secret=value, created_at=now))
        return rows

    # ----------------------------------------------------------------- create

    async def create_workflow(
        self,
        spec: WorkflowCreate,
        *,
        request_hash: str,
        idempotency_key: str | None = None,
        handoff: int = 0,
        lease_seconds: float = 30.0,
        on_jobs: Callable[[list[Job]], None] | None = None,
        on_due: Callable[[], None] | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> tuple[dict[str, Any], bool]:
        """Store a new workflow of ``namespace`` and make its root steps due; idempotent
        by id or key, both scoped by the namespace.

        Answers (status document, created). A second create with the same id (or
        Idempotency-Key) and the same body answers the stored workflow; a different
        body raises Conflict. Up to ``handoff`` root requests are claimed for this
        process and passed to ``on_jobs`` once committed, to be sent at once;
        ``on_due`` is called once committed if requests were left due for a claim.
        """
        budget = _Handoff(handoff, lease_seconds)
        workflow_id = scoped_id(namespace, spec.id or new_workflow_id())
        if idempotency_key is not None:
            idempotency_key = scoped_idempotency_key(namespace, idempotency_key)
        if spec.id is not None or idempotency_key is not None:
            existing = await self._find_existing(workflow_id if spec.id else None, idempotency_key)
            if existing is not None:
                return await self._same_or_conflict(existing, request_hash), False
        pending = _PendingCreate(
            spec,
            workflow_id,
            request_hash,
            idempotency_key,
            budget,
            asyncio.get_running_loop().create_future(),
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
        if on_jobs is not None and budget.jobs:
            on_jobs(budget.jobs)
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
        document = await self.get_workflow(existing.id)
        assert document is not None
        return document

    def _prepare_workflow(
        self, create: _PendingCreate, writes: _Writes
    ) -> tuple[SimpleNamespace, list[SimpleNamespace], _Graph]:
        """The rows of a new workflow and its steps in the state the machine leaves them
        in after start (rather than inserted and then updated); its first requests and
        events are collected in ``writes``."""
        spec, workflow_id = create.spec, create.workflow_id
        request_hash, idempotency_key = create.request_hash, create.idempotency_key
        now = utcnow()
        deps = {s.id: list(s.depends_on) for s in spec.steps}
        dependents = dag.dependents_of(deps)
        workflow = SimpleNamespace(
            id=workflow_id,
            name=spec.name,
            status=WorkflowStatus.RUNNING,
            context=spec.context,
            saga=spec.saga,
            fail_fast=spec.fail_fast,
            timeout=spec.timeout,
            on_complete=spec.on_complete,
            on_error=spec.on_error,
            namespace=namespace_of(workflow_id),
            created_at=now,
            started_at=now,
            completed_at=None,
            deadline_at=now + timedelta(seconds=spec.timeout),
            error=None,
            request_hash=request_hash,
            idempotency_key=idempotency_key,
            open_steps=len(spec.steps),
            step_count=len(spec.steps),
            failed_step=None,
            end_reason=None,
            compensation_started=False,
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
                continue_on_failure=s.continue_on_failure,
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
            _workflow_state(workflow),
            {r.step_id: _step_state(r, None) for r in rows},
            graph=deps,
            now=now,
            seq=time.time_ns,
            new_run_id=new_run_id,
            all_loaded=True,
        )
        machine.start()
        assert machine.run() is None  # every step is in memory
        collected = len(writes.steps)
        self._collect(machine, {r.step_id: str(r.status) for r in rows}, create.budget, writes)
        by_id = {r.step_id: r for r in rows}
        for (_, step_id), _, changes in writes.steps[collected:]:
            for name, value in changes.items():
                setattr(by_id[step_id], name, value)
        del writes.steps[collected:]
        for name, value in writes.workflows.pop(workflow_id, {}).items():
            setattr(workflow, name, value)
        return workflow, rows, _Graph(deps, dependents)

    async def _insert_creates(self) -> None:
        """Insert the creates waiting, all of them in one transaction (group commit)."""
        while self._creates:
            batch, self._creates = self._creates, []
            try:
                await self._insert_together(batch)
            except Exception as exc:
                if len(batch) == 1:
                    _settle_future(batch[0].future, exc)
                    continue
                # One of them failed the batch (an id taken meanwhile): each on its own.
                for create in batch:
                    try:
                        await self._insert_together([create])
                    except Exception as single:
                        _settle_future(create.future, single)

    async def _insert_together(self, batch: Sequence[_PendingCreate]) -> None:
        for create in batch:
            create.budget.reset()
        writes = _Writes()
        async with in_transaction():
            prepared = [self._prepare_workflow(create, writes) for create in batch]
            await _insert_many(Workflow, [vars(workflow) for workflow, _, _ in prepared])
            await _insert_many(Step, [vars(r) for _, rows, _ in prepared for r in rows])
            await self._write(writes)
        for create, (workflow, rows, graph) in zip(batch, prepared, strict=True):
            self._remember_graph(workflow.id, graph.depends_on, graph.dependents)
            _settle_future(create.future, _status_document(workflow, rows))

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
        namespace: str = DEFAULT_NAMESPACE,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The namespace's workflow summaries, newest first, with an opaque cursor for the
        next page (it carries public ids: within a namespace they order like scoped ones)."""
        query = Workflow.filter(namespace=namespace)
        if status:
            query = query.filter(status=status)
        if name:
            query = query.filter(name=name)
        if cursor:
            created_at, last_id = decode_cursor(cursor)
            last_id = scoped_id(namespace, last_id)
            query = query.filter(
                Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=last_id)
            )
        rows = await query.order_by("-created_at", "-id").limit(limit + 1)
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_cursor(rows[-1].created_at, public_id(rows[-1].id))
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

    async def purge_finished(self, *, before: datetime, limit: int = 500) -> int:
        """Delete up to ``limit`` finished workflows that ended before ``before``.

        Steps, deliveries, attempts and events go with them (foreign keys cascade). A
        workflow that still owes a callback is kept until the callback is settled.
        """
        candidates = await (
            Workflow.filter(status__in=list(TERMINAL_WORKFLOW_STATUSES), completed_at__lt=before)
            .order_by("completed_at")
            .limit(limit)
            .values_list("id", flat=True)
        )
        if not candidates:
            return 0
        owing = set(
            await Delivery.filter(workflow_id__in=list(candidates)).values_list(
                "workflow_id", flat=True
            )
        )
        ids = [i for i in candidates if i not in owing]
        if not ids:
            return 0
        async with in_transaction():
            doomed = await Workflow.filter(
                id__in=ids, status__in=list(TERMINAL_WORKFLOW_STATUSES)
            ).values_list("id", flat=True)
            # The driver's row count includes cascaded rows on some databases: count ids.
            await Workflow.filter(id__in=list(doomed)).delete()
        return len(doomed)

    async def count_by_status(self) -> dict[str, int]:
        """How many workflows there are in each status (every status, zeros included)."""
        rows = (
            await Workflow.all()
            .annotate(n=Count("id"))
            .group_by("status")
            .values_list("status", "n")
        )
        counts = {status.value: 0 for status in WorkflowStatus}
        counts.update({str(status): int(n) for status, n in rows})
        return counts

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
            # A step of a workflow whose deadline has passed is not sent: the workflow
            # times out here rather than at the next sweep.
            if tx.expired:
                # Those rows were leased a moment ago by this very claim: not in flight.
                await Delivery.filter(id__in=tx.skipped).update(
                    lease_owner=None, lease_until=None, started=False
                )
            for workflow_id in tx.expired:
                session = await self._session(workflow_id, None)
                if session is not None:
                    session.machine.timeout()
                    await self._run(session.machine, session.loaded, session.finished)
        return jobs

    async def _describe(self, rows: Sequence[Delivery], tx: _Tx) -> list[Job]:
        workflow_ids = {r.workflow_id for r in rows}  # type: ignore[attr-defined]
        workflows = {
            w.id: w
            for w in await _fetch(
                Workflow, WORKFLOW_STATE_COLUMNS, _Where(Workflow).isin("id", workflow_ids)
            )
        }
        by_workflow: dict[str, list[str]] = {}
        for r in rows:
            if r.step_id:
                by_workflow.setdefault(r.workflow_id, []).append(r.step_id)  # type: ignore[attr-defined]
        step_rows: dict[tuple[str, str], SimpleNamespace] = {}
        ancestry: dict[tuple[str, str], list[str]] = {}
        states: dict[str, dict[str, dict[str, Any]]] = {}
        if by_workflow:
            for s in await _fetch(
                Step, STEP_STATE_COLUMNS, _Where(Step).groups("workflow_id", "step_id", by_workflow)
            ):
                step_rows[(s.workflow_id, s.step_id)] = s
            found = await self._ancestry([(w, ids, None) for w, ids in by_workflow.items()])
            for owner_id, (lines, known) in found.items():
                states[owner_id] = known
                ancestry.update({(owner_id, sid): line for sid, line in lines.items()})
        sending: list[Delivery] = []
        starts: list[tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]] = []
        for row in rows:
            wf_id: str = row.workflow_id  # type: ignore[attr-defined]
            workflow = workflows[wf_id]
            kind = DeliveryKind(row.kind)
            if (
                kind is DeliveryKind.STEP
                and workflow.status == WorkflowStatus.RUNNING
                and workflow.end_reason is None
                and workflow.deadline_at is not None
                and workflow.deadline_at <= tx.now
            ):
                tx.expired.add(wf_id)
                tx.skipped.append(row.id)
                continue
            sending.append(row)
            if row.started or kind in CALLBACK_KINDS:
                continue
            step = step_rows[(wf_id, row.step_id or "")]
            where: Mapping[str, Any] = {"workflow_id": wf_id, "step_id": step.step_id}
            if kind is DeliveryKind.STEP and not row.awaiting:
                if step.status in (StepStatus.RUNNING, StepStatus.RETRYING):
                    starts.append(
                        (
                            where,
                            {"status": step.status},
                            {"status": StepStatus.RUNNING, "attempts": row.attempt},
                        )
                    )
            elif kind is DeliveryKind.COMPENSATION:
                starts.append((where, {}, {"compensation_status": CompensationStatus.RUNNING}))
        # Attempts start: one statement for the batch; a step whose status moved on
        # meanwhile is not matched, and gets no step.started event.
        started = set(await _update_many(Step, starts)) if starts else set()
        for where, _, changes in starts:
            started_key = (where["workflow_id"], where["step_id"])
            if "attempts" in changes and started_key in started:
                step_rows[started_key].attempts = changes["attempts"]
                tx.event(
                    started_key[0], "step.started", started_key[1], attempt=changes["attempts"]
                )
        jobs: list[Job] = []
        for row in sending:
            wf_id = row.workflow_id  # type: ignore[attr-defined]
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
                        timeout=CALLBACK_TIMEOUT,
                        policy=CALLBACK_RETRY_POLICY,
                        payload=row.payload,
                        takeover=takeover,
                        due_at=row.due_at,
                    )
                )
                continue
            key = (wf_id, row.step_id or "")
            step = step_rows[key]
            jobs.append(
                _step_job(
                    row.id,
                    workflow,
                    _step_state(step, None),
                    kind=kind,
                    attempt=row.attempt,
                    message_id=row.message_id,
                    url=row.url,
                    previous=previous_steps(ancestry[key], states[wf_id]),
                    due_at=row.due_at,
                    expired=row.awaiting,
                    takeover=takeover and not row.awaiting,
                )
            )
        return jobs

    async def _ancestry(
        self, requests: Sequence[tuple[str, Sequence[str], Mapping[str, StepState] | None]]
    ) -> dict[str, tuple[dict[str, list[str]], dict[str, dict[str, Any]]]]:
        """Per workflow: each step's transitive ancestors, and those ancestors' states.

        One query for every workflow asked about. States the caller already holds
        (``known``, a machine's loaded steps) are used as they are, not read again.
        """
        answer: dict[str, tuple[dict[str, list[str]], dict[str, dict[str, Any]]]] = {}
        missing: dict[str, list[str]] = {}
        for workflow_id, step_ids, known in requests:
            entry = await self._graph_entry(workflow_id)
            ancestry = {s: dag.ancestors(s, entry.depends_on, entry.positions) for s in step_ids}
            known = known or {}
            wanted = {a for line in ancestry.values() for a in line}
            states: dict[str, dict[str, Any]] = {}
            for step_id in wanted & set(known):
                step = known[step_id]
                states[step_id] = {
                    "status": step.status.value,
                    "result": step.result,
                    "error": step.error,
                }
            if wanted - set(known):
                missing[workflow_id] = sorted(wanted - set(known))
            answer[workflow_id] = (ancestry, states)
        if missing:
            for row in await _fetch(
                Step,
                ("workflow_id", "step_id", "status", "result", "error"),
                _Where(Step).groups("workflow_id", "step_id", missing),
            ):
                answer[row.workflow_id][1][row.step_id] = {
                    "status": row.status,
                    "result": row.result,
                    "error": row.error,
                }
        return answer

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

    async def settle(
        self,
        reports: Sequence[Report],
        *,
        rand: Any = None,
        handoff: int = 0,
        lease_seconds: float = 30.0,
    ) -> SettleSummary:
        """Record a batch of attempt outcomes and every transition they cause, in one commit."""
        summary = SettleSummary()
        if not reports:
            return summary
        # Lock workflows in one order everywhere, so two processes settling batches
        # that share workflows cannot deadlock.
        ordered = sorted(reports, key=lambda r: (r.job.workflow_id, r.job.delivery_id))

        async def transaction() -> list[dict[str, Any]]:
            budget.reset()
            writes = _Writes()
            created: list[dict[str, Any]] = []
            async with in_transaction():
                ids = [r.job.delivery_id for r in ordered]
                deliveries = {
                    d.id: d
                    for d in await _fetch(
                        Delivery,
                        ("id", "workflow_id", "step_id", "attempt"),
                        _Where(Delivery).isin("id", ids),
                    )
                }
                by_workflow: dict[str, list[tuple[Report, _Row]]] = {}
                for report in ordered:
                    job = report.job
                    # The delivery must still be ours, for this attempt: a process whose
                    # lease ran out may answer after another took the row over.
                    delivery = deliveries.get(job.delivery_id)
                    if delivery is None or delivery.attempt != job.attempt:
                        continue
                    if job.kind in CALLBACK_KINDS:
                        await self._settle_callback(job, report.result, delivery, rand)
                    else:
                        by_workflow.setdefault(job.workflow_id, []).append((report, delivery))
                if by_workflow:
                    created = await self._settle_workflows(by_workflow, rand, budget, writes)
                await self._write(writes)
                await _insert_many(Attempt, [_attempt_row(r) for r in ordered])
            return created

        budget = _Handoff(handoff, lease_seconds)
        created = await retry_transaction(transaction)
        now = time.time()
        summary.jobs = budget.jobs
        summary.due_now = sum(1 for d in created if d["due_at"] <= now and d["lease_owner"] is None)
        return summary

    async def _settle_workflows(
        self,
        items: Mapping[str, list[tuple[Report, _Row]]],
        rand: Any,
        budget: _Handoff,
        writes: _Writes,
    ) -> list[dict[str, Any]]:
        """Every answer in the batch, one machine session per workflow.

        The answered steps are loaded with their direct dependents (known from the
        cached graph), which is all a completion usually touches, for every workflow
        of the batch at once.
        """
        wanted: dict[str, set[str]] = {}
        for workflow_id, answers in items.items():
            dependents = (await self._graph_entry(workflow_id)).dependents
            mine = wanted.setdefault(workflow_id, set())
            for report, _ in answers:
                step_id = report.job.step_id or ""
                mine.add(step_id)
                mine.update(dependents.get(step_id, ()))
        sessions = await self._sessions(wanted)
        for workflow_id, answers in items.items():
            session = sessions.get(workflow_id)
            if session is None:  # the workflow was purged
                writes.finished.extend(d.id for _, d in answers)
                continue
            machine = session.machine
            for report, delivery in answers:
                job = report.job
                assert job.step_id is not None
                if job.kind is DeliveryKind.STEP:
                    decision = machine.attempt_finished(
                        job.step_id, job.attempt, report.result, rand=rand
                    )
                else:
                    decision = machine.compensation_finished(
                        job.step_id, job.attempt, report.result, rand=rand
                    )
                await self._after_decision(delivery, decision, session)
        return await self._run_all(list(sessions.values()), budget, writes)

    async def _after_decision(
        self, delivery: _Row, decision: AttemptDecision | None, session: _Session
    ) -> None:
        """Keep, reschedule, park (async) or remove the delivery row the answer was for."""
        if decision is None or decision.status in (StepStatus.COMPLETED, StepStatus.FAILED):
            session.finished.append(delivery.id)
        elif decision.status is StepStatus.RETRYING:
            await self._reschedule(delivery, decision.retry_in or 0.0)
        else:
            step = session.machine.steps[delivery.step_id or ""]
            if step.status is StepStatus.RUNNING:
                # Async: the step waits for its callback until the deadline in due_at.
                await Delivery.filter(id=delivery.id).update(
                    awaiting=True,
                    due_at=time.time() + step.timeout,
                    lease_owner=None,
                    lease_until=None,
                )
            else:
                session.finished.append(delivery.id)

    async def _settle_callback(
        self, job: Job, result: AttemptResult, delivery: _Row, rand: Any
    ) -> None:
        decision = decide_after_attempt(result, job.attempt, job.policy, rand=rand)
        if decision.status is StepStatus.RETRYING:
            await self._reschedule(delivery, decision.retry_in or 0.0)
            return
        await Delivery.filter(id=delivery.id).delete()
        type_ = "callback.failed" if decision.status is StepStatus.FAILED else "callback.delivered"
        data: dict[str, Any] = {"kind": job.kind.value, "attempt": job.attempt}
        if decision.status is StepStatus.FAILED:
            data["error"] = decision.error.to_dict() if decision.error else None
        self.event_tally[type_] += 1
        _log_event(job.workflow_id, type_, None, data)
        await Event.create(
            workflow_id=job.workflow_id, step_id=None, type=type_, at=utcnow(), data=data
        )

    async def _reschedule(self, delivery: _Row, retry_in: float) -> None:
        await Delivery.filter(id=delivery.id).update(
            attempt=delivery.attempt + 1,
            due_at=time.time() + retry_in,
            started=False,
            awaiting=False,
            lease_owner=None,
            lease_until=None,
        )

    # ----------------------------------------------------------------- actions

    async def cancel(self, workflow_id: str, *, compensate: bool) -> dict[str, Any]:
        """Cancel a workflow (DESIGN §3); raises NotFound or Conflict."""
        return await self._act(workflow_id, lambda m: m.cancel(compensate=compensate))

    async def retry(self, workflow_id: str) -> dict[str, Any]:
        """Re-run a failed workflow, or resume a failed compensation."""
        return await self._act(workflow_id, lambda m: m.retry_workflow())

    async def retry_step(self, workflow_id: str, step_id: str) -> dict[str, Any]:
        """Re-run one step and everything downstream of it."""

        def act(machine: Machine) -> None:
            if step_id not in machine.steps:
                raise NotFound(f"workflow '{public_id(workflow_id)}' has no step '{step_id}'")
            machine.retry_step(step_id)

        return await self._act(workflow_id, act)

    async def _act(self, workflow_id: str, action: Any) -> dict[str, Any]:
        await retry_transaction(lambda: self._act_once(workflow_id, action))
        document = await self.get_workflow(workflow_id)
        assert document is not None
        return document

    async def _act_once(self, workflow_id: str, action: Any) -> None:
        async with in_transaction():
            session = await self._session(workflow_id, None)
            if session is None:
                raise NotFound(f"no workflow '{public_id(workflow_id)}'")
            try:
                action(session.machine)
                await self._run(session.machine, session.loaded, session.finished)
            except MachineConflict as exc:
                # Nothing was written: the transaction rolls back with the 409.
                raise Conflict(str(exc)) from exc

    async def expire_workflows(self, *, now: datetime | None = None, limit: int = 100) -> int:
        """Fail running workflows whose deadline passed (the periodic sweep)."""
        now = now or utcnow()
        ids = await (
            Workflow.filter(status=WorkflowStatus.RUNNING, deadline_at__lte=now, end_reason=None)
            .limit(limit)
            .values_list("id", flat=True)
        )
        for workflow_id in ids:
            async with in_transaction():
                session = await self._session(str(workflow_id), None)
                if session is None:
                    continue
                session.machine.timeout()
                await self._run(session.machine, session.loaded, session.finished)
        return len(ids)

    async def async_result(self, claim: CallbackClaim, body: bytes) -> dict[str, Any]:
        """An async step's callback: settle it like an answer to its request.

        Raises NotFound when the step does not exist, Gone when it is no longer
        waiting for this run (already answered, timed out, retried, cancelled).
        """
        async with in_transaction():
            # The workflow's lock first: of callbacks sent at once with one token, the
            # ones that wait here then find the step no longer waiting (single use).
            session = await self._session(claim.workflow_id, [claim.step_id])
            if session is None:
                raise NotFound("no such step")
            _, delivery = await self._waiting(claim)
            result = classify_answer(200, body)
            decision = session.machine.attempt_finished(claim.step_id, claim.attempt, result)
            await self._after_decision(delivery, decision, session)
            await self._run(session.machine, session.loaded, session.finished)
            await Attempt.create(
                workflow_id=claim.workflow_id,
                step_id=claim.step_id,
                kind=DeliveryKind.STEP,
                number=claim.attempt,
                message_id=delivery.message_id,
                started_at=utcnow(),
                duration_ms=0.0,
                http_status=None,
                outcome=f"callback.{result.outcome}",
                error=result.error.to_dict() if result.error else None,
                response_excerpt=result.excerpt,
            )
            status = session.machine.steps[claim.step_id].status
        return {"accepted": True, "stepId": claim.step_id, "status": status.value}

    async def heartbeat(self, claim: CallbackClaim) -> dict[str, Any]:
        """Push an async step's deadline out by its timeout."""
        async with in_transaction():
            step_row, delivery = await self._waiting(claim)
            if not delivery.awaiting:
                raise Conflict("the step's request is still in flight; heartbeat after its 202")
            due = time.time() + step_row.timeout
            await Delivery.filter(id=delivery.id).update(due_at=due)
        deadline = datetime.fromtimestamp(due, UTC)
        return {"stepId": claim.step_id, "deadline": iso(deadline)}

    async def _waiting(self, claim: CallbackClaim) -> tuple[Step, Delivery]:
        step = await Step.get_or_none(workflow_id=claim.workflow_id, step_id=claim.step_id)
        if step is None:
            raise NotFound("no such step")
        delivery = await Delivery.get_or_none(
            workflow_id=claim.workflow_id,
            step_id=claim.step_id,
            kind=DeliveryKind.STEP,
            attempt=claim.attempt,
        )
        if (
            delivery is None
            or step.status != StepStatus.RUNNING
            or step.run_id != claim.run_id
            or step.attempts != claim.attempt
        ):
            raise Gone("this callback is no longer accepted: the step is not waiting for it")
        return step, delivery

    # ----------------------------------------------------------------- machine

    async def _session(self, workflow_id: str, step_ids: Sequence[str] | None) -> _Session | None:
        """Lock the workflow and load it (with ``step_ids``, or every step when None)."""
        return (await self._sessions({workflow_id: step_ids})).get(workflow_id)

    async def _sessions(self, wanted: Mapping[str, Iterable[str] | None]) -> dict[str, _Session]:
        """Lock workflows (in id order) and load the given steps of each (every step
        for None), in one query per table for all of them."""
        workflows = await _fetch(
            Workflow,
            WORKFLOW_STATE_COLUMNS,
            _Where(Workflow).isin("id", sorted(wanted)),
            " ORDER BY id FOR UPDATE" if _supports_for_update() else "",
        )
        loaded: dict[str, dict[str, str]] = {w.id: {} for w in workflows}
        states = await self._load_many({w.id: (loaded[w.id], wanted[w.id]) for w in workflows})
        now = utcnow()
        sessions: dict[str, _Session] = {}
        for workflow in workflows:
            machine = Machine(
                _workflow_state(workflow),
                states.get(workflow.id, {}),
                graph=await self._graph(workflow.id),
                now=now,
                seq=time.time_ns,
                new_run_id=new_run_id,
                all_loaded=wanted[workflow.id] is None,
            )
            sessions[workflow.id] = _Session(machine, loaded[workflow.id])
        return sessions

    async def _load_many(
        self, wanted: Mapping[str, tuple[dict[str, str], Iterable[str] | None]]
    ) -> dict[str, dict[str, StepState]]:
        """Steps of several workflows (given ids, or all with None) with their step
        requests, in one query per table; steps already in ``loaded`` are skipped, and
        each one read is added there with the status it had."""
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
        requests: dict[tuple[str, str], SimpleNamespace] = {}
        for d in await _fetch(
            Delivery,
            DELIVERY_VIEW_COLUMNS,
            _Where(Delivery).groups("workflow_id", "step_id", groups).eq("kind", DeliveryKind.STEP),
        ):
            requests[(d.workflow_id, d.step_id or "")] = d
        found: dict[str, dict[str, StepState]] = {}
        for row in await _fetch(
            Step, STEP_STATE_COLUMNS, _Where(Step).groups("workflow_id", "step_id", groups)
        ):
            workflow_id = row.workflow_id
            loaded = wanted[workflow_id][0]
            if row.step_id in loaded:
                continue
            loaded[row.step_id] = row.status
            found.setdefault(workflow_id, {})[row.step_id] = _step_state(
                row, requests.get((workflow_id, row.step_id))
            )
        return found

    async def _run(
        self,
        machine: Machine,
        loaded: dict[str, str],
        finished: Sequence[int] = (),
        budget: _Handoff | None = None,
    ) -> list[dict[str, Any]]:
        """Run one machine to the end, loading what it asks for, then write its effects."""
        return await self._run_all([_Session(machine, loaded, list(finished))], budget)

    async def _run_all(
        self,
        sessions: Sequence[_Session],
        budget: _Handoff | None = None,
        writes: _Writes | None = None,
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
            for workflow_id, (session, need) in needs.items():
                session.machine.provide(
                    states.get(workflow_id, {}).values(), all_steps=need.all_steps
                )
            pending = [session for session, _ in needs.values()]
        batch = writes if writes is not None else _Writes()
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
        loaded: dict[str, str],
        budget: _Handoff | None,
        writes: _Writes,
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
                    effects.events.append(MachineEvent("step.started", d.step_id, {"attempt": 1}))
            budget.remaining -= len(handed)
        for step_id, changes in effects.steps.items():
            fields = {k: (json_value(v) if k == "result" else v) for k, v in changes.items()}
            writes.steps.append(((workflow_id, step_id), loaded[step_id], fields))
            if "status" in changes:
                loaded[step_id] = str(changes["status"])
        if effects.workflow:
            fields = dict(effects.workflow)
            if "status" in fields and fields["status"] in TERMINAL_WORKFLOW_STATUSES:
                fields.setdefault("completed_at", machine.now)
            fields["compensation_started"] = machine.workflow.compensation_started
            writes.workflows.setdefault(workflow_id, {}).update(fields)
        writes.drops.extend((workflow_id, d.step_id) for d in effects.drops)
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
                    "started": mine,
                    "awaiting": False,
                    "lease_owner": self.owner if mine else None,
                    "lease_until": now + budget.lease_seconds if mine and budget else None,
                }
            )
        writes.deliveries.extend(rows)
        if effects.events:
            self.event_tally.update(e.type for e in effects.events)
            for e in effects.events:
                _log_event(workflow_id, e.type, e.step_id, e.data)
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

    async def _write(self, writes: _Writes) -> None:
        """Write what ``_collect`` gathered: a few statements for any number of workflows."""
        if writes.finished:
            await Delivery.filter(id__in=writes.finished).delete()
        if writes.drops:
            by_workflow: dict[str, list[str]] = {}
            for workflow_id, step_id in writes.drops:
                by_workflow.setdefault(workflow_id, []).append(step_id)
            await Delivery.filter(
                Q(
                    *(Q(workflow_id=w, step_id__in=s) for w, s in by_workflow.items()),
                    join_type="OR",
                ),
                kind=DeliveryKind.STEP,
            ).delete()
        if writes.steps:
            matched = await _update_many(
                Step,
                [
                    ({"workflow_id": w, "step_id": s}, {"status": expected}, fields)
                    for (w, s), expected, fields in writes.steps
                ],
            )
            if len(matched) != len(writes.steps):
                moved = len(writes.steps) - len(matched)
                raise TransitionRejected(f"{moved} of {len(writes.steps)} steps changed under us")
        if writes.workflows:
            await _update_many(
                Workflow, [({"id": w}, {}, fields) for w, fields in writes.workflows.items()]
            )
        ids: dict[tuple[str, str], int] = {}
        if writes.deliveries:
            mine = [d for d in writes.deliveries if d["lease_owner"] is not None]
            others = [d for d in writes.deliveries if d["lease_owner"] is None]
            # The requests handed off are inserted answering their ids (the jobs need
            # them); the rest in one executemany.
            for d in await _insert_returning(Delivery, mine, ("id", "workflow_id", "step_id")):
                ids[(d["workflow_id"], d["step_id"])] = d["id"]
            await _insert_many(Delivery, others)
            if others:
                await _notify_due()
                for budget in writes.budgets:
                    budget.left_due = True
        if writes.events:
            await _insert_many(Event, writes.events)
        if writes.handed:
            await self._handoff_jobs(writes.handed, ids)

    async def _handoff_jobs(
        self,
        handed: Sequence[tuple[Machine, list[str], float, _Handoff]],
        ids: Mapping[tuple[str, str], int],
    ) -> None:
        """Jobs for step requests this transaction claimed as it made them due, each
        added to the budget it was claimed in."""
        lines = await self._ancestry([(m.workflow.id, steps, m.steps) for m, steps, _, _ in handed])
        for machine, step_ids, due_at, budget in handed:
            workflow_id = machine.workflow.id
            ancestry, states = lines[workflow_id]
            for step_id in step_ids:
                step = machine.steps[step_id]
                budget.jobs.append(
                    _step_job(
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

    # ----------------------------------------------------------------- helpers

    async def _flush(self, tx: _Tx) -> None:
        if tx.events:
            self.event_tally.update(e["type"] for e in tx.events)
            await _insert_many(Event, tx.events)

    def _remember_graph(
        self,
        workflow_id: str,
        deps: dict[str, list[str]],
        dependents: dict[str, list[str]] | None = None,
    ) -> None:
        graph = _Graph(deps, dependents or {})
        self._graphs[workflow_id] = graph
        self._graph_steps += graph.size
        while self._graph_steps > GRAPH_CACHE_STEPS and len(self._graphs) > 1:
            _, old = self._graphs.popitem(last=False)
            self._graph_steps -= old.size

    async def _graph(self, workflow_id: str) -> dict[str, list[str]]:
        return (await self._graph_entry(workflow_id)).depends_on

    async def _graph_entry(self, workflow_id: str) -> _Graph:
        graph = self._graphs.get(workflow_id)
        if graph is None:
            rows = await Step.filter(workflow_id=workflow_id).values_list("step_id", "depends_on")
            self._remember_graph(workflow_id, {sid: list(deps) for sid, deps in rows})
            graph = self._graphs[workflow_id]
        else:
            self._graphs.move_to_end(workflow_id)
        return graph


@dataclass(slots=True)
class _Session:
    """A machine over one locked workflow, and the status each loaded step had."""

    machine: Machine
    loaded: dict[str, str]
    #: Delivery rows whose answers were settled, deleted together when the session ends.
    finished: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Writes:
    """What one transaction writes, gathered from every machine it ran, written at once.

    A batch of answers from many workflows costs a handful of statements, not a
    handful per workflow.
    """

    #: Delivery rows whose answers were settled.
    finished: list[int] = field(default_factory=list)
    #: (workflow, step) whose step request row is dropped.
    drops: list[tuple[str, str]] = field(default_factory=list)
    #: ((workflow, step), the status it was loaded with, fields to write).
    steps: list[tuple[tuple[str, str], str, dict[str, Any]]] = field(default_factory=list)
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Step requests claimed as they were made due: (machine, step ids, due time, the
    #: budget they were claimed in, whose caller sends them).
    handed: list[tuple[Machine, list[str], float, _Handoff]] = field(default_factory=list)
    #: The hand-off budgets of the machines collected (told when requests are left due).
    budgets: list[_Handoff] = field(default_factory=list)


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


def _log_event(workflow_id: str, type_: str, step_id: str | None, data: Any) -> None:
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


def _supports_for_update() -> bool:
    return bool(Workflow._meta.db.capabilities.support_for_update)


async def _notify_due() -> None:
    """Tell other processes new work is due (PostgreSQL; sent when the transaction commits)."""
    if _supports_for_update():
        await Delivery._meta.db.execute_query(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')")


#: A row read with ``_fetch`` or a model instance: read by attribute either way.
_Row = Delivery | SimpleNamespace

#: Columns a machine needs of a step, a workflow, and a step's request row.
STEP_STATE_COLUMNS = (
    "workflow_id",
    "step_id",
    "status",
    "depends_on",
    "dependents",
    "deps_remaining",
    "url",
    "run_id",
    "retry",
    "timeout",
    "continue_on_failure",
    "condition",
    "compensation",
    "attempts",
    "completion_seq",
    "compensation_status",
    "result",
    "error",
    "position",
)
WORKFLOW_STATE_COLUMNS = (
    "id",
    "name",
    "status",
    "context",
    "fail_fast",
    "saga",
    "failed_step",
    "open_steps",
    "step_count",
    "timeout",
    "end_reason",
    "on_complete",
    "on_error",
    "error",
    "compensation_started",
    "deadline_at",
)
DELIVERY_VIEW_COLUMNS = ("workflow_id", "step_id", "kind", "attempt", "lease_owner", "awaiting")


class _Where:
    """A WHERE clause and its parameters, with the placeholders of the connection's dialect."""

    def __init__(self, model: type[Model]) -> None:
        self.model = model
        self.postgres = model._meta.db.schema_generator.DIALECT == "postgres"
        self.params: list[Any] = []
        self.parts: list[str] = []

    def param(self, value: Any) -> str:
        self.params.append(value.value if isinstance(value, Enum) else value)
        return f"${len(self.params)}" if self.postgres else "?"

    def eq(self, name: str, value: Any) -> _Where:
        self.parts.append(f"{_column(self.model, name)} = {self.param(value)}")
        return self

    def isin(self, name: str, values: Iterable[Any]) -> _Where:
        marks = ", ".join(self.param(v) for v in values)
        self.parts.append(f"{_column(self.model, name)} IN ({marks})")
        return self

    def groups(self, outer: str, inner: str, groups: Mapping[str, Iterable[Any] | None]) -> _Where:
        """Rows whose ``outer`` is a key of ``groups`` and whose ``inner`` is one of its
        values (any ``inner`` when the values are None)."""
        terms = []
        for key, values in groups.items():
            term = f"{_column(self.model, outer)} = {self.param(key)}"
            if values is not None:
                marks = ", ".join(self.param(v) for v in values)
                term = f"({term} AND {_column(self.model, inner)} IN ({marks}))"
            terms.append(term)
        self.parts.append("(" + " OR ".join(terms) + ")")
        return self

    @property
    def sql(self) -> str:
        return " AND ".join(self.parts)


async def _fetch(
    model: type[Model], columns: tuple[str, ...], where: _Where, suffix: str = ""
) -> list[SimpleNamespace]:
    """Rows as plain records with only the named fields, converted as Tortoise would
    (JSON, booleans, times), without building model instances or query objects."""
    select, names = _projection(model, columns)
    found = []
    for raw in await model._meta.db.execute_query_dict(
        f"{select} WHERE {where.sql}{suffix}", where.params
    ):
        found.append(
            SimpleNamespace(
                **{
                    name: (
                        convert(raw[source]) if convert and raw[source] is not None else raw[source]
                    )
                    for name, source, convert in names
                }
            )
        )
    return found


@functools.cache
def _projection(
    model: type[Model], columns: tuple[str, ...]
) -> tuple[str, list[tuple[str, str, Callable[[Any], Any] | None]]]:
    """The SELECT … FROM of ``columns`` and how to read each (computed once)."""
    fields_map = model._meta.fields_map
    names = [(c, (fields_map[c].source_field or c), _converter(fields_map[c])) for c in columns]
    select = f'SELECT {", ".join(_column(model, c) for c in columns)} FROM "{model._meta.db_table}"'
    return select, names


def _converter(f: Any) -> Callable[[Any], Any] | None:
    if isinstance(f, (fields.JSONField, fields.DatetimeField)):
        return cast(Callable[[Any], Any], f.to_python_value)
    if isinstance(f, fields.BooleanField):
        return bool
    return None


async def _insert_many(model: type[Model], rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows given as {field: value} (the same fields in each) in one batch,
    without building a model instance per row."""
    if not rows:
        return
    db = model._meta.db
    names = list(rows[0])
    if db.schema_generator.DIALECT == "postgres":
        marks = ", ".join(f"${i + 1}" for i in range(len(names)))
    else:
        marks = ", ".join("?" for _ in names)
    columns = ", ".join(_column(model, n) for n in names)
    sql = f'INSERT INTO "{model._meta.db_table}" ({columns}) VALUES ({marks})'
    await db.execute_many(sql, [[_db_value(model, n, row[n]) for n in names] for row in rows])


#: Rows per multi-row INSERT … RETURNING (keeps parameters under every limit).
INSERT_CHUNK = 500


async def _insert_returning(
    model: type[Model], rows: Sequence[Mapping[str, Any]], returning: Sequence[str]
) -> list[dict[str, Any]]:
    """Insert rows (the same fields in each) with multi-row INSERTs that answer the
    ``returning`` columns of every row."""
    db = model._meta.db
    found: list[dict[str, Any]] = []
    if not rows:
        return found
    names = list(rows[0])
    columns = ", ".join(_column(model, n) for n in names)
    answer = ", ".join(_column(model, n) for n in returning)
    for start in range(0, len(rows), INSERT_CHUNK):
        where = _Where(model)  # only its placeholders
        values = ", ".join(
            "(" + ", ".join(where.param(_db_value(model, n, row[n])) for n in names) + ")"
            for row in rows[start : start + INSERT_CHUNK]
        )
        sql = f'INSERT INTO "{model._meta.db_table}" ({columns}) VALUES {values} RETURNING {answer}'
        found.extend(await db.execute_query_dict(sql, where.params))
    return found


_UpdateRow = tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]


async def _update_many(model: type[Model], rows: Sequence[_UpdateRow]) -> list[tuple[Any, ...]]:
    """Update many rows, each with its own values, in one statement per shape.

    Each row is (key columns, guard columns, fields to set): it is updated only if its
    guard columns still hold the given values, and only the fields it names are set.
    Rows of the same shape (same columns) go in one statement: a prepared statement
    run for every row on SQLite, one UPDATE over arrays on PostgreSQL. Answers the keys
    of the rows that matched (zero rows updated means someone else won); on SQLite,
    which cannot say which rows of a batch matched, a short count raises
    TransitionRejected so the transaction runs again.
    """
    db = model._meta.db
    postgres = db.schema_generator.DIALECT == "postgres"
    shapes: dict[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], list[_UpdateRow]] = {}
    for row in rows:
        key, guard, changes = row
        shapes.setdefault((tuple(key), tuple(guard), tuple(sorted(changes))), []).append(row)
    matched: list[tuple[Any, ...]] = []
    for (keys, guards, names), group in shapes.items():
        if postgres:
            sql, params = _pg_update(model, keys, guards, names, group)
            found = await db.execute_query_dict(sql, params)
            matched.extend(tuple(f[c] for c in keys) for f in found)
            continue
        sql, values = _sqlite_update(model, keys, guards, names, group)
        # In a transaction, the SQLite client (app/sqlite.py) answers the rows changed.
        count = cast(int, await cast(Any, db).execute_many(sql, values))
        if count != len(group):
            raise TransitionRejected(
                f"{len(group) - count} of {len(group)} {model._meta.db_table} rows changed under us"
            )
        matched.extend(tuple(key[c] for c in keys) for key, _, _ in group)
    return matched


def _db_value(model: type[Model], name: str, value: Any) -> Any:
    """``value`` as the driver takes it for the field ``name`` of ``model``.

    Values reach the store validated (pydantic at the API, the machine's own values),
    so only JSON fields go through Tortoise's conversion (it encodes them); the
    others are passed as they are, enums as their values.
    """
    if isinstance(value, Enum):
        return value.value
    if name in _json_fields(model):
        return model._meta.fields_map[name].to_db_value(value, model)
    return value


@functools.cache
def _json_fields(model: type[Model]) -> frozenset[str]:
    return frozenset(
        name for name, f in model._meta.fields_map.items() if isinstance(f, fields.JSONField)
    )


@functools.cache
def _column(model: type[Model], name: str) -> str:
    return '"' + (model._meta.fields_map[name].source_field or name) + '"'


def _sqlite_update(
    model: type[Model],
    keys: tuple[str, ...],
    guards: tuple[str, ...],
    names: tuple[str, ...],
    rows: Sequence[_UpdateRow],
) -> tuple[str, list[list[Any]]]:
    sets = ", ".join(f"{_column(model, n)} = ?" for n in names)
    where = " AND ".join(f"{_column(model, c)} = ?" for c in (*keys, *guards))
    sql = f'UPDATE "{model._meta.db_table}" SET {sets} WHERE {where}'
    values = [
        [_db_value(model, n, changes[n]) for n in names]
        + [_db_value(model, c, key[c]) for c in keys]
        + [_db_value(model, c, guard[c]) for c in guards]
        for key, guard, changes in rows
    ]
    return sql, values


def _pg_update(
    model: type[Model],
    keys: tuple[str, ...],
    guards: tuple[str, ...],
    names: tuple[str, ...],
    rows: Sequence[_UpdateRow],
) -> tuple[str, list[Any]]:
    """UPDATE … FROM unnest(arrays): one statement and one parameter per column."""
    fields_map = model._meta.fields_map
    columns = [("k", c) for c in keys] + [("g", c) for c in guards] + [("s", n) for n in names]
    params: list[Any] = []
    arrays = []
    for i, (part, name) in enumerate(columns):
        sql_type = fields_map[name].get_for_dialect("postgres", "SQL_TYPE")
        if part == "k":
            params.append([_db_value(model, name, key[name]) for key, _, _ in rows])
        elif part == "g":
            params.append([_db_value(model, name, guard[name]) for _, guard, _ in rows])
        else:
            params.append([_db_value(model, name, changes[name]) for _, _, changes in rows])
        arrays.append(f"${i + 1}::{sql_type}[]")
    aliases = [f"c{i}" for i in range(len(columns))]
    sets = ", ".join(
        f"{_column(model, name)} = v.{alias}"
        for (part, name), alias in zip(columns, aliases, strict=True)
        if part == "s"
    )
    where = " AND ".join(
        f"t.{_column(model, name)} = v.{alias}"
        for (part, name), alias in zip(columns, aliases, strict=True)
        if part != "s"
    )
    returning = ", ".join(f"t.{_column(model, c)}" for c in keys)
    sql = (
        f'UPDATE "{model._meta.db_table}" AS t SET {sets} '
        f"FROM unnest({', '.join(arrays)}) AS v({', '.join(aliases)}) "
        f"WHERE {where} RETURNING {returning}"
    )
    return sql, params


#: Errors PostgreSQL raises when concurrent transactions collide; the transaction is
#: rolled back and can simply run again. Tortoise passes asyncpg's errors through.
_RETRYABLE = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.LockNotAvailableError,
    TransitionRejected,
)
TRANSACTION_ATTEMPTS = 4


def _retryable(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _RETRYABLE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def retry_transaction(operation: Callable[[], Awaitable[T]]) -> T:
    """Run ``operation`` (one transaction) again when it lost a race, a few times."""
    for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
        try:
            return await operation()
        except Exception as exc:
            if attempt == TRANSACTION_ATTEMPTS or not _retryable(exc):
                raise
            log.info("transaction lost a race (%s); running it again", type(exc).__name__)
            await asyncio.sleep(0.005 * attempt)
    raise AssertionError("unreachable")


def _workflow_state(w: Workflow | SimpleNamespace) -> WorkflowState:
    return WorkflowState(
        id=w.id,
        name=w.name,
        status=WorkflowStatus(w.status),
        context=w.context,
        fail_fast=w.fail_fast,
        saga=w.saga,
        failed_step=w.failed_step,
        open_steps=w.open_steps,
        step_count=w.step_count,
        timeout=w.timeout,
        end_reason=WorkflowErrorCode(w.end_reason) if w.end_reason else None,
        on_complete=w.on_complete,
        on_error=w.on_error,
        error=w.error,
        compensation_started=w.compensation_started,
    )


def _step_state(
    row: Step | SimpleNamespace, delivery: Delivery | SimpleNamespace | None
) -> StepState:
    view = None
    if delivery is not None:
        view = DeliveryView(
            kind=DeliveryKind(delivery.kind),
            attempt=delivery.attempt,
            in_flight=delivery.lease_owner is not None and not delivery.awaiting,
            awaiting=delivery.awaiting,
        )
    return StepState(
        step_id=row.step_id,
        status=StepStatus(row.status),
        depends_on=list(row.depends_on),
        dependents=list(row.dependents),
        deps_remaining=row.deps_remaining,
        url=row.url,
        run_id=row.run_id,
        policy=RetryPolicy.from_dict(row.retry),
        timeout=row.timeout,
        continue_on_failure=row.continue_on_failure,
        condition=row.condition,
        compensation=row.compensation,
        attempts=row.attempts,
        completion_seq=row.completion_seq,
        compensation_status=row.compensation_status,
        result=row.result,
        error=row.error,
        position=row.position,
        delivery=view,
    )


def _step_job(
    delivery_id: int,
    workflow: Workflow | WorkflowState | SimpleNamespace,
    step: StepState,
    *,
    kind: DeliveryKind,
    attempt: int,
    message_id: str,
    url: str,
    previous: dict[str, Any],
    due_at: float,
    expired: bool = False,
    takeover: bool = False,
) -> Job:
    """The job for a step's (or its compensation's) request: the one place that maps
    a step to what the dispatcher sends."""
    return Job(
        delivery_id=delivery_id,
        workflow_id=workflow.id,
        workflow_name=workflow.name,
        kind=kind,
        step_id=step.step_id,
        attempt=attempt,
        message_id=message_id,
        url=url,
        timeout=step.timeout,
        policy=step.policy,
        run_id=step.run_id,
        context=workflow.context,
        previous_steps=previous,
        compensating=(
            {"stepId": step.step_id, "result": step.result}
            if kind is DeliveryKind.COMPENSATION
            else None
        ),
        expired=expired,
        takeover=takeover,
        due_at=due_at,
        workflow_timeout=workflow.timeout,
    )


def _attempt_row(report: Report) -> dict[str, Any]:
    job = report.job
    result = report.result
    return {
        "workflow_id": job.workflow_id,
        "step_id": job.step_id,
        "kind": job.kind,
        "number": job.attempt,
        "message_id": job.message_id,
        "started_at": report.started_at,
        "duration_ms": round(report.duration_ms, 3),
        "http_status": result.http_status,
        "outcome": result.outcome,
        "error": result.error.to_dict() if result.error else None,
        "response_excerpt": result.excerpt,
    }


# --------------------------------------------------------------------------- documents


def _summary(w: Workflow) -> dict[str, Any]:
    return {
        "id": public_id(w.id),
        "name": w.name,
        "status": w.status,
        "createdAt": iso(w.created_at),
        "startedAt": iso(w.started_at),
        "completedAt": iso(w.completed_at),
        "stepCount": w.step_count,
        "error": w.error,
    }


def _status_document(
    w: Workflow | SimpleNamespace, steps: Sequence[Step | SimpleNamespace]
) -> dict[str, Any]:
    lists = outcome_lists(_step_state(s, None) for s in steps)
    return {
        "id": public_id(w.id),
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


def _step_document(s: Step | SimpleNamespace) -> dict[str, Any]:
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
        "responseExcerpt": a.response_excerpt,
    }


def _event_document(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "type": e.type,
        "workflowId": public_id(e.workflow_id),  # type: ignore[attr-defined]
        "stepId": e.step_id,
        "at": iso(e.at),
        "data": e.data or {},
    }


def encode_cursor(created_at: datetime, workflow_id: str) -> str:
    raw = orjson.dumps([created_at.astimezone(UTC).isoformat(), workflow_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Parse a list cursor; ValueError when it was not made by encode_cursor.

    Only what ``encode_cursor`` can make passes: a time that is a UTC datetime
    and a valid workflow id (anything else would reach the database as a value
    it refuses, such as a NUL character or an id longer than the column).
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, workflow_id = orjson.loads(base64.urlsafe_b64decode(padded))
        when = datetime.fromisoformat(created)
        if not isinstance(workflow_id, str) or not _ID.fullmatch(workflow_id):
            raise ValueError("bad cursor")
        if when.tzinfo is None:
            raise ValueError("bad cursor")
        # Raises OverflowError for a time beyond year 1 to 9999 once in UTC.
        return when.astimezone(UTC), workflow_id
    except (ValueError, TypeError, OverflowError, orjson.JSONDecodeError) as exc:
        raise ValueError("invalid cursor") from exc


# --------------------------------------------------------------------------- tenants


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What may be shown about a stored API key: never the key, never its hash."""

    id: str
    namespace: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What may be shown about a namespace's signing secret: a fingerprint, not the secret."""

    fingerprint: str
    created_at: datetime


def _check_secrets(namespace: str, secrets_: Sequence[Secret]) -> None:
    check_namespace(namespace)
    if namespace == DEFAULT_NAMESPACE and secrets_:
        raise ValueError("the default namespace signs with BATON_SIGNING_SECRETS")
    for secret in secrets_:
        decode_secret(str(secret))  # InvalidSecret is a ValueError, and names no secret


def _key_info(row: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        namespace=row.namespace,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def secret_fingerprint(secret: str) -> str:
    """A short, one-way name for a secret, to tell secrets apart during a rotation."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def _secret_info(row: NamespaceSecret) -> SecretInfo:
    return SecretInfo(fingerprint=secret_fingerprint(row.secret), created_at=row.created_at)
