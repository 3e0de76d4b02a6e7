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
import hashlib
import logging
import secrets
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import orjson
from starlette.datastructures import Secret
from tortoise.exceptions import DBConnectionError, IntegrityError, OperationalError
from tortoise.expressions import Q
from tortoise.functions import Count
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
from app.schemas import WorkflowCreate
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


@dataclass(slots=True)
class _Graph:
    """A workflow's DAG, immutable once created, cached per process."""

    depends_on: dict[str, list[str]]
    dependents: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.dependents:
            self.dependents = dag.dependents_of(self.depends_on)

    @property
    def size(self) -> int:
        return len(self.depends_on)


@dataclass(slots=True)
class _Tx:
    """Events one claim transaction accumulates before writing them in bulk."""

    events: list[Event] = field(default_factory=list)
    now: datetime = field(default_factory=utcnow)
    #: Workflows found past their deadline while claiming.
    expired: set[str] = field(default_factory=set)
    skipped: list[int] = field(default_factory=list)

    def event(self, workflow_id: str, type_: str, step_id: str | None = None, **data: Any) -> None:
        self.events.append(
            Event(workflow_id=workflow_id, step_id=step_id, type=type_, at=self.now, data=data)
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
        #: API key id -> when this process last wrote its last_used_at (monotonic).
        self._key_use: dict[str, float] = {}

    # ----------------------------------------------------------------- health

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        try:
            await Workflow.filter(id="").exists()
        except (OperationalError, OSError) as exc:
            raise StoreError(f"database unreachable: {exc}") from exc

    async def server_secret(self, name: str) -> str:
        """A secret shared by every process on this database, created on first use."""
        row = await ServerSecret.get_or_none(name=name)
        if row is None:
            try:
                row = await ServerSecret.create(
                    name=name, value=secrets.token_urlsafe(32), created_at=utcnow()
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
        namespace: str = DEFAULT_NAMESPACE,
    ) -> tuple[dict[str, Any], bool]:
        """Store a new workflow of ``namespace`` and make its root steps due; idempotent
        by id or key, both scoped by the namespace.

        Answers (status document, created). A second create with the same id (or
        Idempotency-Key) and the same body answers the stored workflow; a different
        body raises Conflict. Up to ``handoff`` root requests are claimed for this
        process and passed to ``on_jobs`` once committed, to be sent at once.
        """
        budget = _Handoff(handoff, lease_seconds)
        workflow_id = scoped_id(namespace, spec.id or new_workflow_id())
        if idempotency_key is not None:
            idempotency_key = scoped_idempotency_key(namespace, idempotency_key)
        if spec.id is not None or idempotency_key is not None:
            existing = await self._find_existing(workflow_id if spec.id else None, idempotency_key)
            if existing is not None:
                return await self._same_or_conflict(existing, request_hash), False
        try:
            async with in_transaction():
                await self._insert_workflow(
                    spec, workflow_id, request_hash, idempotency_key, budget
                )
        except IntegrityError as exc:
            # Lost a race with an identical create: answer like the idempotent path.
            existing = await self._find_existing(workflow_id if spec.id else None, idempotency_key)
            if existing is None:
                raise StoreError(f"could not store workflow: {exc}") from exc
            return await self._same_or_conflict(existing, request_hash), False
        if on_jobs is not None and budget.jobs:
            on_jobs(budget.jobs)
        document = await self.get_workflow(workflow_id)
        assert document is not None
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

    async def _insert_workflow(
        self,
        spec: WorkflowCreate,
        workflow_id: str,
        request_hash: str,
        idempotency_key: str | None,
        budget: _Handoff | None = None,
    ) -> None:
        now = utcnow()
        deps = {s.id: list(s.depends_on) for s in spec.steps}
        dependents = dag.dependents_of(deps)
        workflow = await Workflow.create(
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
            deadline_at=now + timedelta(seconds=spec.timeout),
            request_hash=request_hash,
            idempotency_key=idempotency_key,
            open_steps=len(spec.steps),
            step_count=len(spec.steps),
        )
        rows = [
            Step(
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
                run_id=new_run_id(),
            )
            for position, s in enumerate(spec.steps)
        ]
        self._remember_graph(workflow_id, deps, dependents)
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
        # The rows are not written yet: insert them in the state the machine left them
        # in, rather than inserting and then updating each root.
        by_id = {r.step_id: r for r in rows}
        for step_id, changes in machine.effects.steps.items():
            for name, value in changes.items():
                setattr(by_id[step_id], name, value)
        machine.effects.steps.clear()
        await Step.bulk_create(rows, batch_size=1000)
        await self._run(machine, {r.step_id: str(r.status) for r in rows}, (), budget)

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
        workflows = {w.id: w for w in await Workflow.filter(id__in=workflow_ids)}
        step_keys = {(r.workflow_id, r.step_id) for r in rows if r.step_id}  # type: ignore[attr-defined]
        step_rows: dict[tuple[str, str], Step] = {}
        if step_keys:
            # One query for the whole batch; the cross product it may return is trimmed here.
            for s in await Step.filter(
                workflow_id__in=list({k[0] for k in step_keys}),
                step_id__in=list({k[1] for k in step_keys}),
            ):
                key = (s.workflow_id, s.step_id)  # type: ignore[attr-defined]
                if key in step_keys:
                    step_rows[key] = s
        ancestry: dict[tuple[str, str], list[str]] = {}
        states: dict[str, dict[str, dict[str, Any]]] = {}
        for owner_id in {k[0] for k in step_keys}:
            mine = [k[1] for k in step_keys if k[0] == owner_id]
            lines, states[owner_id] = await self._ancestor_states(owner_id, mine)
            ancestry.update({(owner_id, sid): line for sid, line in lines.items()})
        jobs: list[Job] = []
        for row in rows:
            wf_id: str = row.workflow_id  # type: ignore[attr-defined]
            workflow = workflows[wf_id]
            kind = DeliveryKind(row.kind)
            takeover = row.started
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
            if kind is DeliveryKind.STEP and not takeover and not row.awaiting:
                updated = await Step.filter(
                    id=step.id, status__in=(StepStatus.RUNNING, StepStatus.RETRYING)
                ).update(status=StepStatus.RUNNING, attempts=row.attempt)
                if updated:
                    step.attempts = row.attempt
                    tx.event(wf_id, "step.started", step.step_id, attempt=row.attempt)
            elif kind is DeliveryKind.COMPENSATION and not takeover:
                await Step.filter(id=step.id).update(compensation_status=CompensationStatus.RUNNING)
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

    async def _step_states(
        self, workflow_id: str, step_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        if not step_ids:
            return {}
        rows = await Step.filter(workflow_id=workflow_id, step_id__in=list(step_ids)).values(
            "step_id", "status", "result", "error"
        )
        return {r["step_id"]: r for r in rows}

    async def _ancestor_states(
        self,
        workflow_id: str,
        step_ids: Sequence[str],
        known: Mapping[str, StepState] | None = None,
    ) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
        """Each step's transitive ancestors, and their states in one query.

        States the caller already holds (``known``, a machine's loaded steps) are used
        as they are, and not read again.
        """
        graph = await self._graph(workflow_id)
        ancestry = {s: dag.ancestors(s, graph) for s in step_ids}
        known = known or {}
        wanted = {a for line in ancestry.values() for a in line}
        states = await self._step_states(workflow_id, sorted(wanted - set(known)))
        for step_id in wanted & set(known):
            step = known[step_id]
            states[step_id] = {
                "status": step.status.value,
                "result": step.result,
                "error": step.error,
            }
        return ancestry, states

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

        async def transaction() -> list[Delivery]:
            created: list[Delivery] = []
            budget.remaining = handoff
            budget.jobs = []
            async with in_transaction():
                ids = [r.job.delivery_id for r in ordered]
                deliveries = {d.id: d for d in await Delivery.filter(id__in=ids)}
                by_workflow: dict[str, list[tuple[Report, Delivery]]] = {}
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
                for workflow_id, items in by_workflow.items():
                    created.extend(await self._settle_workflow(workflow_id, items, rand, budget))
                await Attempt.bulk_create([_attempt_row(r) for r in ordered])
            return created

        budget = _Handoff(handoff, lease_seconds)
        created = await retry_transaction(transaction)
        now = time.time()
        summary.jobs = budget.jobs
        summary.due_now = sum(1 for d in created if d.due_at <= now and d.lease_owner is None)
        return summary

    async def _settle_workflow(
        self,
        workflow_id: str,
        items: list[tuple[Report, Delivery]],
        rand: Any,
        budget: _Handoff | None = None,
    ) -> list[Delivery]:
        """Every answer of one workflow in the batch, in one session of its machine.

        The answered steps are loaded with their direct dependents (known from the
        cached graph), which is all a completion usually touches.
        """
        dependents = (await self._graph_entry(workflow_id)).dependents
        wanted: set[str] = set()
        for report, _ in items:
            step_id = report.job.step_id or ""
            wanted.add(step_id)
            wanted.update(dependents.get(step_id, ()))
        session = await self._session(workflow_id, sorted(wanted))
        if session is None:
            await Delivery.filter(id__in=[d.id for _, d in items]).delete()
            return []
        machine = session.machine
        for report, delivery in items:
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
        return await self._run(machine, session.loaded, session.finished, budget)

    async def _after_decision(
        self, delivery: Delivery, decision: AttemptDecision | None, session: _Session
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
        self, job: Job, result: AttemptResult, delivery: Delivery, rand: Any
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

    async def _reschedule(self, delivery: Delivery, retry_in: float) -> None:
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
            _, delivery = await self._waiting(claim)
            result = classify_answer(200, body)
            session = await self._session(claim.workflow_id, [claim.step_id])
            assert session is not None
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
        query = Workflow.filter(id=workflow_id)
        if _supports_for_update():
            query = query.select_for_update()
        workflow = await query.first()
        if workflow is None:
            return None
        graph = await self._graph(workflow_id)
        loaded: dict[str, str] = {}
        states = await self._load_steps(workflow_id, step_ids, loaded)
        machine = Machine(
            _workflow_state(workflow),
            states,
            graph=graph,
            now=utcnow(),
            seq=time.time_ns,
            new_run_id=new_run_id,
            all_loaded=step_ids is None,
        )
        return _Session(machine, loaded)

    async def _load_steps(
        self, workflow_id: str, step_ids: Iterable[str] | None, loaded: dict[str, str]
    ) -> dict[str, StepState]:
        query = Step.filter(workflow_id=workflow_id)
        deliveries = Delivery.filter(workflow_id=workflow_id, kind=DeliveryKind.STEP)
        if step_ids is not None:
            ids = [i for i in step_ids if i not in loaded]
            if not ids:
                return {}
            query = query.filter(step_id__in=ids)
            deliveries = deliveries.filter(step_id__in=ids)
        by_step = {d.step_id: d for d in await deliveries}
        states: dict[str, StepState] = {}
        for row in await query:
            if row.step_id in loaded:
                continue
            loaded[row.step_id] = row.status
            states[row.step_id] = _step_state(row, by_step.get(row.step_id))
        return states

    async def _run(
        self,
        machine: Machine,
        loaded: dict[str, str],
        finished: Sequence[int] = (),
        budget: _Handoff | None = None,
    ) -> list[Delivery]:
        """Run the machine to the end, loading what it asks for, then write its effects."""
        while (need := machine.run()) is not None:
            wanted = None if need.all_steps else sorted(need.step_ids)
            states = await self._load_steps(machine.workflow.id, wanted, loaded)
            machine.provide(states.values(), all_steps=need.all_steps)
        if finished:
            await Delivery.filter(id__in=list(finished)).delete()
        return await self._apply(machine, loaded, budget)

    async def _apply(
        self, machine: Machine, loaded: dict[str, str], budget: _Handoff | None = None
    ) -> list[Delivery]:
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
            updated = await Step.filter(
                workflow_id=workflow_id, step_id=step_id, status=loaded[step_id]
            ).update(**fields)
            if updated != 1:
                raise TransitionRejected(
                    f"step {workflow_id}/{step_id} changed under us (expected {loaded[step_id]})"
                )
            if "status" in changes:
                loaded[step_id] = str(changes["status"])
        if effects.workflow:
            fields = dict(effects.workflow)
            if "status" in fields and fields["status"] in TERMINAL_WORKFLOW_STATUSES:
                fields.setdefault("completed_at", machine.now)
            if isinstance(fields.get("end_reason"), WorkflowErrorCode):
                fields["end_reason"] = fields["end_reason"].value
            fields["compensation_started"] = machine.workflow.compensation_started
            await Workflow.filter(id=workflow_id).update(**fields)
        dropped = [d.step_id for d in effects.drops]
        if dropped:
            await Delivery.filter(
                workflow_id=workflow_id, step_id__in=dropped, kind=DeliveryKind.STEP
            ).delete()
        now = time.time()
        handed_set = set(handed)
        rows = []
        for d in effects.deliveries:
            mine = d.kind is DeliveryKind.STEP and d.step_id in handed_set
            rows.append(
                Delivery(
                    workflow_id=workflow_id,
                    step_id=d.step_id,
                    kind=d.kind,
                    attempt=1,
                    message_id=message_id(workflow_id, d.step_id, d.kind, d.run_id),
                    due_at=now,
                    url=d.url,
                    payload=d.payload,
                    started=mine,
                    lease_owner=self.owner if mine else None,
                    lease_until=now + budget.lease_seconds if mine and budget else None,
                )
            )
        if rows:
            await Delivery.bulk_create(rows)
            if len(handed) < len(rows):
                await _notify_due()
        if effects.events:
            self.event_tally.update(e.type for e in effects.events)
            for e in effects.events:
                _log_event(workflow_id, e.type, e.step_id, e.data)
            await Event.bulk_create(
                [
                    Event(
                        workflow_id=workflow_id,
                        step_id=e.step_id,
                        type=e.type,
                        at=machine.now,
                        data=e.data,
                    )
                    for e in effects.events
                ]
            )
        if handed and budget is not None:
            budget.jobs.extend(await self._handoff_jobs(machine, handed, now))
        machine.effects = Effects()
        return rows

    async def _handoff_jobs(
        self, machine: Machine, step_ids: list[str], due_at: float
    ) -> list[Job]:
        """Jobs for step requests this transaction claimed as it made them due."""
        workflow_id = machine.workflow.id
        ids = dict(
            await Delivery.filter(
                workflow_id=workflow_id,
                kind=DeliveryKind.STEP,
                step_id__in=step_ids,
                attempt=1,
                lease_owner=self.owner,
            ).values_list("step_id", "id")
        )
        ancestry, states = await self._ancestor_states(workflow_id, step_ids, machine.steps)
        jobs = []
        for step_id in step_ids:
            step = machine.steps[step_id]
            jobs.append(
                _step_job(
                    int(ids[step_id]),
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
        return jobs

    # ----------------------------------------------------------------- helpers

    async def _flush(self, tx: _Tx) -> None:
        if tx.events:
            self.event_tally.update(e.type for e in tx.events)
            await Event.bulk_create(tx.events)

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


def _workflow_state(w: Workflow) -> WorkflowState:
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


def _step_state(row: Step, delivery: Delivery | None) -> StepState:
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
    workflow: Workflow | WorkflowState,
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
    )


def _attempt_row(report: Report) -> Attempt:
    job = report.job
    result = report.result
    return Attempt(
        workflow_id=job.workflow_id,
        step_id=job.step_id,
        kind=job.kind,
        number=job.attempt,
        message_id=job.message_id,
        started_at=report.started_at,
        duration_ms=round(report.duration_ms, 3),
        http_status=result.http_status,
        outcome=result.outcome,
        error=result.error.to_dict() if result.error else None,
        response_excerpt=result.excerpt,
    )


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


def _status_document(w: Workflow, steps: Sequence[Step]) -> dict[str, Any]:
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


def _step_document(s: Step) -> dict[str, Any]:
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
    """Parse a list cursor; ValueError when it was not made by encode_cursor."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, workflow_id = orjson.loads(base64.urlsafe_b64decode(padded))
        when = datetime.fromisoformat(created)
        if not isinstance(workflow_id, str) or when.tzinfo is None:
            raise ValueError("bad cursor")
        return when, workflow_id
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
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
