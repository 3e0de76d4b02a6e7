"""Reading: status documents, lists, steps with their attempt logs, events, counts.

Reads take no locks and change nothing; they may run outside a transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tortoise.exceptions import OperationalError
from tortoise.expressions import Q
from tortoise.functions import Count

from app.engine import WorkflowStatus
from app.errors import StoreError
from app.models import Attempt, Delivery, Event, Step, Workflow
from app.store.render import (
    EventRenderer,
    attempt_document,
    decode_cursor,
    encode_cursor,
    event_document,
    status_document,
    step_document,
    summary,
)
from app.store.session import StoreCore
from app.store.sql import Where, projection
from app.tenants import DEFAULT_NAMESPACE, public_id, scoped_id

LIST_LIMIT_DEFAULT = 50
LIST_LIMIT_MAX = 500
#: Events per page of ``GET …/events`` (DESIGN §3).
EVENTS_LIMIT_DEFAULT = 1000
EVENTS_LIMIT_MAX = 10_000


@dataclass(frozen=True, slots=True)
class RenderedEvent:
    """An event as the API sends it: its id, its type, and its document as JSON."""

    id: int
    type: str
    json: bytes


async def load_status_document(workflow_id: str) -> dict[str, Any] | None:
    """The status document of DESIGN §3, or None."""
    workflow = await Workflow.get_or_none(id=workflow_id)
    if workflow is None:
        return None
    steps = await Step.filter(workflow_id=workflow_id).order_by("position")
    return status_document(workflow, steps)


_EVENT_COLUMNS = ("id", "type", "step_id", "at", "data")


class Reading(StoreCore):
    """Reads of workflows, steps and events."""

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        try:
            await Workflow.filter(id="").exists()
        except (OperationalError, OSError) as exc:
            raise StoreError(f"database unreachable: {exc}") from exc

    async def get_workflow(self, workflow_id: str) -> dict[str, Any] | None:
        """The status document of DESIGN §3, or None."""
        return await load_status_document(workflow_id)

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
        return [summary(w) for w in rows], next_cursor

    async def get_step(self, workflow_id: str, step_id: str) -> dict[str, Any] | None:
        """A step's document plus its ``attemptLog``, or None."""
        step = await Step.get_or_none(workflow_id=workflow_id, step_id=step_id)
        if step is None:
            return None
        attempts = await Attempt.filter(workflow_id=workflow_id, step_id=step_id).order_by("id")
        document = step_document(step)
        document["attemptLog"] = [attempt_document(a) for a in attempts]
        return document

    async def get_dependencies(self, workflow_id: str, step_id: str) -> dict[str, Any] | None:
        step = await Step.get_or_none(workflow_id=workflow_id, step_id=step_id).only(
            "depends_on", "dependents"
        )
        if step is None:
            return None
        return {"dependsOn": list(step.depends_on), "dependedOnBy": list(step.dependents)}

    async def event_page(
        self, workflow_id: str, *, after: int | None = None, limit: int
    ) -> list[RenderedEvent]:
        """Up to ``limit`` of the workflow's events after the event id ``after``, oldest
        first, already rendered (read as plain rows, their data never decoded)."""
        where = Where(Event).eq("workflow_id", workflow_id)
        if after is not None:
            where.gt("id", after)
        select, _ = projection(Event, _EVENT_COLUMNS)
        rows = await Event._meta.db.execute_query_dict(
            f'{select} WHERE {where.sql} ORDER BY "id" LIMIT {int(limit)}', where.params
        )
        renderer = EventRenderer(workflow_id, Event._meta.fields_map["at"].to_python_value)
        return [RenderedEvent(row["id"], row["type"], renderer.render(row)) for row in rows]

    async def workflow_exists(self, workflow_id: str) -> bool:
        return await Workflow.filter(id=workflow_id).exists()

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
        return [event_document(e) for e in await query]
