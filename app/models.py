"""Tortoise models: the database schema. Only ``app.store`` imports this module.

The schema is changed through migrations in ``app/migrations`` (Tortoise's own
``tortoise makemigrations``); read each generated SQLite migration before
committing it: a table rebuild drops indexes and cascades deletes.
"""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class Workflow(Model):
    #: The id scoped by namespace: the public id in the default namespace, else namespace/id.
    id = fields.CharField(primary_key=True, max_length=192)
    #: The namespace of the API key that created the workflow.
    namespace = fields.CharField(max_length=63, default="default", db_default="default")
    name = fields.CharField(max_length=200, null=True)
    status = fields.CharField(max_length=24)
    context: Any = fields.JSONField()
    saga = fields.BooleanField(default=False)
    fail_fast = fields.BooleanField(default=True)
    timeout = fields.FloatField()
    on_complete = fields.TextField(null=True)
    on_error = fields.TextField(null=True)
    created_at = fields.DatetimeField()
    started_at = fields.DatetimeField(null=True)
    completed_at = fields.DatetimeField(null=True)
    deadline_at = fields.DatetimeField(null=True)
    error: Any = fields.JSONField(null=True)
    #: sha256 of the canonical create request, for idempotent creates.
    request_hash = fields.CharField(max_length=64)
    #: The Idempotency-Key, prefixed by the namespace and a unit separator outside the default one.
    idempotency_key = fields.CharField(max_length=320, null=True, unique=True)
    #: Steps not yet completed, failed, skipped or cancelled.
    open_steps = fields.IntField()
    #: The first step that failed for good without continueOnFailure.
    failed_step = fields.CharField(max_length=128, null=True)
    step_count = fields.IntField()
    #: Why the workflow stopped starting steps: workflow_timeout or cancelled (else null).
    end_reason = fields.CharField(max_length=24, null=True)
    #: Saga compensation has been planned for the current failure.
    compensation_started = fields.BooleanField(default=False)
    #: Steps completed so far: each completion takes the next number as its step's
    #: ``completion_seq``, under the workflow's row lock (an order the database gives,
    #: whatever the clocks of the processes say).
    completions = fields.BigIntField(default=0, db_default=0)
    #: How many times steps were re-opened (a retry): states of settled steps cached
    #: by a process before the last re-open are stale.
    reopened = fields.IntField(default=0, db_default=0)
    #: What ``previousSteps`` holds in step requests: ``ancestors`` or ``parents``.
    previous_steps = fields.CharField(max_length=16, default="ancestors", db_default="ancestors")
    #: A delayed start (``startAt`` / ``delay``): the workflow is ``pending`` until then.
    start_at = fields.DatetimeField(null=True)
    #: The schedule that fired the workflow (its scoped id), and the tick it fired for.
    schedule_id = fields.CharField(max_length=192, null=True)
    scheduled_at = fields.DatetimeField(null=True)

    class Meta:
        table = "workflows"
        indexes = (
            ("created_at", "id"),
            ("status", "created_at"),
            ("name", "created_at"),
            ("status", "deadline_at"),
            ("namespace", "created_at", "id"),
            ("status", "start_at"),
            ("schedule_id", "status"),
        )


class Step(Model):
    id = fields.BigIntField(primary_key=True)
    workflow: fields.ForeignKeyRelation[Workflow] = fields.ForeignKeyField(
        "models.Workflow", related_name="steps", on_delete=fields.CASCADE
    )
    step_id = fields.CharField(max_length=128)
    position = fields.IntField()
    url = fields.TextField()
    depends_on: Any = fields.JSONField()
    dependents: Any = fields.JSONField()
    #: Dependencies not yet settled: readiness counts down, it never rescans the DAG.
    deps_remaining = fields.IntField()
    status = fields.CharField(max_length=16)
    attempts = fields.IntField(default=0)
    retry: Any = fields.JSONField()
    timeout = fields.FloatField()
    compensation = fields.TextField(null=True)
    condition = fields.TextField(null=True)
    # Kept equal to ``on_failure == "ignore"`` (what it meant before ``onFailure``);
    # ``on_failure`` is the one read.
    continue_on_failure = fields.BooleanField(default=False)
    #: What failing for good does to its dependents: fail, ignore, remove or continue.
    on_failure = fields.CharField(max_length=16, default="fail", db_default="fail")
    started_at = fields.DatetimeField(null=True)
    completed_at = fields.DatetimeField(null=True)
    #: Orders completions for saga compensation (reverse completion order): the
    #: workflow's ``completions`` counter when the step completed.
    completion_seq = fields.BigIntField(null=True)
    result: Any = fields.JSONField(null=True)
    error: Any = fields.JSONField(null=True)
    compensation_status = fields.CharField(max_length=16, null=True)
    #: Base of the webhook-id: the same for every automatic attempt, new on a manual retry.
    run_id = fields.CharField(max_length=64)

    class Meta:
        table = "steps"
        unique_together = (("workflow", "step_id"),)
        indexes = (("workflow_id", "status"),)


class Delivery(Model):
    """A request Baton owes someone: the durable work queue, claimed under a lease.

    Scheduling times are epoch seconds: they are compared in claim queries on every
    database and are never shown to users.
    """

    id = fields.BigIntField(primary_key=True)
    workflow: fields.ForeignKeyRelation[Workflow] = fields.ForeignKeyField(
        "models.Workflow", related_name="deliveries", on_delete=fields.CASCADE
    )
    #: The step this delivery belongs to (steps and compensations), null for callbacks.
    step_id = fields.CharField(max_length=128, null=True)
    kind = fields.CharField(max_length=16)
    attempt = fields.IntField(default=1)
    #: The webhook-id: stable across automatic attempts.
    message_id = fields.CharField(max_length=96)
    due_at = fields.FloatField()
    #: Whether this attempt has been claimed before (a re-claim is a lease take-over).
    claimed = fields.BooleanField(default=False)
    #: An async step waiting for its callback, ``due_at`` then being its deadline.
    awaiting = fields.BooleanField(default=False)
    lease_owner = fields.CharField(max_length=64, null=True)
    lease_until = fields.FloatField(null=True)
    #: Callback bodies are fixed when the workflow ends (steps build theirs at send time).
    payload: Any = fields.JSONField(null=True)
    url = fields.TextField()

    class Meta:
        table = "deliveries"
        indexes = (("due_at",), ("workflow_id", "step_id"))


class Schedule(Model):
    """A recurring workflow (DESIGN §8). Its whole state is here: APScheduler only wakes
    the processes that fire it, and its ``CronTrigger`` only does the calendar maths."""

    #: Scoped by namespace like a workflow id.
    id = fields.CharField(primary_key=True, max_length=192)
    namespace = fields.CharField(max_length=63)
    #: Five cron fields (aliases expanded), or null with ``every``.
    cron = fields.CharField(max_length=256, null=True)
    #: Seconds between ticks, or null with ``cron``.
    every = fields.BigIntField(null=True)
    timezone = fields.CharField(max_length=64)
    start_at = fields.DatetimeField(null=True)
    end_at = fields.DatetimeField(null=True)
    #: Fires in all (``limit``), or null.
    fire_limit = fields.IntField(null=True)
    overlap = fields.CharField(max_length=16)
    catchup_window = fields.FloatField()
    jitter = fields.FloatField()
    paused = fields.BooleanField(default=False)
    note = fields.TextField(null=True)
    #: The create body each fire uses (without ``id``), as it was sent.
    workflow: Any = fields.JSONField()
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()
    #: The next tick (its scheduled time), and when it fires (the tick plus its jitter),
    #: both null once no tick is left, and while paused.
    next_run_at = fields.DatetimeField(null=True)
    next_fire_at = fields.DatetimeField(null=True)
    #: When the schedule last fired a workflow.
    last_run_at = fields.DatetimeField(null=True)
    fired_count = fields.IntField(default=0)
    #: ``buffer_one``: the tick waiting for the previous workflow to end, or null.
    buffered_at = fields.DatetimeField(null=True)
    #: Bumped by every replace, pause and resume: a firing pass that read an older
    #: version writes nothing.
    version = fields.IntField(default=0)

    class Meta:
        table = "schedules"
        indexes = (("paused", "next_fire_at"), ("namespace", "id"))


class ScheduleRun(Model):
    """What one tick of a schedule came to. The unique (schedule, tick) key is what
    makes a tick fire once, whichever process — or trigger — gets there first."""

    id = fields.BigIntField(primary_key=True)
    schedule: fields.ForeignKeyRelation[Schedule] = fields.ForeignKeyField(
        "models.Schedule", related_name="runs", on_delete=fields.CASCADE
    )
    scheduled_at = fields.DatetimeField()
    fired_at = fields.DatetimeField(null=True)
    #: The workflow fired (scoped id), or null (skipped, missed, buffered).
    workflow_id = fields.CharField(max_length=192, null=True)
    #: fired, skipped, missed or buffered.
    outcome = fields.CharField(max_length=16)

    class Meta:
        table = "schedule_runs"
        unique_together = (("schedule", "scheduled_at"),)


class ServerSecret(Model):
    """Secrets the server processes share through the database (callback token key)."""

    name = fields.CharField(primary_key=True, max_length=64)
    value = fields.TextField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "server_secrets"


class Attempt(Model):
    """One delivery attempt, as it happened: the attempt log."""

    id = fields.BigIntField(primary_key=True)
    workflow: fields.ForeignKeyRelation[Workflow] = fields.ForeignKeyField(
        "models.Workflow", related_name="attempt_log", on_delete=fields.CASCADE
    )
    step_id = fields.CharField(max_length=128, null=True)
    kind = fields.CharField(max_length=16)
    number = fields.IntField()
    message_id = fields.CharField(max_length=96)
    started_at = fields.DatetimeField()
    duration_ms = fields.FloatField()
    http_status = fields.IntField(null=True)
    #: completed, failed or async for a request, callback.completed or callback.failed for an
    #: async step's callback.
    outcome = fields.CharField(max_length=32)
    error: Any = fields.JSONField(null=True)
    response_excerpt = fields.TextField(null=True)

    class Meta:
        table = "attempts"
        indexes = (("workflow_id", "step_id"),)


class Event(Model):
    id = fields.BigIntField(primary_key=True)
    workflow: fields.ForeignKeyRelation[Workflow] = fields.ForeignKeyField(
        "models.Workflow", related_name="events", on_delete=fields.CASCADE
    )
    step_id = fields.CharField(max_length=128, null=True)
    type = fields.CharField(max_length=40)
    at = fields.DatetimeField()
    data: Any = fields.JSONField(null=True)

    class Meta:
        table = "events"
        indexes = (("workflow_id", "id"),)


class Server(Model):
    """A live server process: renewed every few seconds while it runs.

    A process whose row stops being renewed is dead: another takes back the
    deliveries it had leased at once, rather than waiting for each lease to run out.
    """

    #: The process's lease owner name (``Store.owner``).
    owner = fields.CharField(primary_key=True, max_length=64)
    started_at = fields.DatetimeField()
    #: When the process last said it is alive (the database's clock).
    seen_at = fields.DatetimeField()

    class Meta:
        table = "servers"


class ApiKey(Model):
    """An API key of a namespace. Only its SHA-256 is kept: the key is shown once, at creation."""

    #: Public handle of the key (key_...), used to list and revoke it.
    id = fields.CharField(primary_key=True, max_length=32)
    namespace = fields.CharField(max_length=63)
    #: Hex SHA-256 of the key (keys are random 256-bit tokens, so a fast hash suffices).
    key_hash = fields.CharField(max_length=64, unique=True)
    #: The first characters of the key, to recognise it in a list (not enough to use it).
    prefix = fields.CharField(max_length=16)
    created_at = fields.DatetimeField()
    revoked_at = fields.DatetimeField(null=True)
    #: Updated at most once a minute per process.
    last_used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "api_keys"
        indexes = (("namespace", "created_at"),)


class NamespaceSecret(Model):
    """A signing secret of one namespace. All of a namespace's secrets sign its requests."""

    id = fields.BigIntField(primary_key=True)
    namespace = fields.CharField(max_length=63, db_index=True)
    #: A whsec_ secret. Kept as is: it is an HMAC key, needed to sign.
    secret = fields.TextField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "namespace_secrets"
