"""The ``/v1/schedules`` routes (DESIGN §8): recurring workflows, per namespace.

``Api`` (``app.api``) builds one ``ScheduleApi`` and serves its routes; it hands over
the HTTP helpers the routes share with the others (reading a bounded body, the
request's namespace, the JSON answer), so that this module does not import
``app.api``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from app.errors import FieldError, NotFound, ValidationFailed
from app.schedules import cron_of, time_zone
from app.schemas import (
    MAX_BODY_BYTES,
    SCHEDULE_ID_PATTERN,
    ScheduleSpec,
    parse_note_request,
    parse_schedule_request,
)
from app.store import Store
from app.store.rows import utcnow
from app.store.schedules import SCHEDULE_LIST_DEFAULT, SCHEDULE_LIST_MAX, decode_schedule_cursor
from app.tenants import scoped_id

#: Pause and resume take a small ``{"note"}`` at most.
MAX_NOTE_BODY_BYTES = 64 * 1024

_SCHEDULE_ID = re.compile(SCHEDULE_ID_PATTERN)


def cadence_problems(spec: ScheduleSpec, now: datetime | None = None) -> list[FieldError]:
    """What is wrong with a schedule's cron expression, time zone or time bounds."""
    problems: list[FieldError] = []
    if spec.cron is not None:
        try:
            cron_of(spec.cron)
        except ValueError as exc:
            problems.append(FieldError("cron", str(exc)))
    try:
        time_zone(spec.timezone)
    except ValueError as exc:
        problems.append(FieldError("timezone", str(exc)))
    if spec.end_at is not None and spec.end_at <= (now or utcnow()):
        problems.append(FieldError("endAt", "is in the past: the schedule would never fire"))
    return problems


class ScheduleApi:
    """Route handlers for schedules."""

    def __init__(
        self,
        store: Store,
        *,
        check_url: Callable[[str], None],
        check_condition: Callable[[str], None],
        read_body: Callable[[Request, int], Awaitable[bytes]],
        namespace: Callable[[Request], str],
        respond: Callable[..., Response],
        whole_number: Callable[[Mapping[str, str], str, int, int, list[FieldError]], int],
        wake: Callable[[], None],
        due_at: Callable[[datetime | None], None],
    ) -> None:
        self.store = store
        self._check_url = check_url
        self._check_condition = check_condition
        self._read_body = read_body
        self._namespace = namespace
        self._respond = respond
        self._whole_number = whole_number
        self._wake = wake
        #: Tells the timekeeper of a tick that falls due (in this process, at once).
        self._due_at = due_at

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/schedules", self.list_schedules, methods=["GET"]),
            Route("/v1/schedules/{schedule_id}", self.put_schedule, methods=["PUT"]),
            Route("/v1/schedules/{schedule_id}", self.get_schedule, methods=["GET"]),
            Route("/v1/schedules/{schedule_id}", self.delete_schedule, methods=["DELETE"]),
            Route("/v1/schedules/{schedule_id}/pause", self.pause_schedule, methods=["POST"]),
            Route("/v1/schedules/{schedule_id}/resume", self.resume_schedule, methods=["POST"]),
            Route("/v1/schedules/{schedule_id}/trigger", self.trigger_schedule, methods=["POST"]),
        ]

    async def put_schedule(self, request: Request) -> Response:
        schedule_id: str = request.path_params["schedule_id"]
        if not _SCHEDULE_ID.fullmatch(schedule_id):
            raise ValidationFailed(
                [
                    FieldError(
                        "scheduleId",
                        "must be 1 to 110 characters (letters, digits, '_', '.', ':', '-'), "
                        "starting with a letter or digit",
                    )
                ]
            )
        raw = await self._read_body(request, MAX_BODY_BYTES)
        spec, _ = parse_schedule_request(
            raw,
            check_url=self._check_url,
            check_condition=self._check_condition,
            check_cadence=cadence_problems,
        )
        document, created = await self.store.put_schedule(
            schedule_id, spec, namespace=self._namespace(request)
        )
        self._due_at(_time(document["nextRunAt"]))
        root = request.scope.get("root_path", "")
        return self._respond(
            document,
            status_code=201 if created else 200,
            headers={"Location": f"{root}/v1/schedules/{document['id']}"},
        )

    async def list_schedules(self, request: Request) -> Response:
        params = request.query_params
        errors: list[FieldError] = []
        limit = self._whole_number(
            params, "limit", SCHEDULE_LIST_DEFAULT, SCHEDULE_LIST_MAX, errors
        )
        cursor = params.get("cursor") or None
        if cursor is not None:
            try:
                decode_schedule_cursor(cursor)
            except ValueError:
                errors.append(FieldError("cursor", "is not a cursor this server handed out"))
        if errors:
            raise ValidationFailed(errors, "The query parameters are not valid.")
        items, next_cursor = await self.store.list_schedules(
            namespace=self._namespace(request), limit=limit, cursor=cursor
        )
        return self._respond({"items": items, "nextCursor": next_cursor})

    async def get_schedule(self, request: Request) -> Response:
        document = await self.store.get_schedule(self._scoped(request))
        if document is None:
            raise self._missing(request)
        return self._respond(document)

    async def delete_schedule(self, request: Request) -> Response:
        if not await self.store.delete_schedule(self._scoped(request)):
            raise self._missing(request)
        return Response(status_code=204)

    async def pause_schedule(self, request: Request) -> Response:
        note = parse_note_request(await self._read_body(request, MAX_NOTE_BODY_BYTES)).note
        return self._respond(await self.store.pause_schedule(self._scoped(request), note))

    async def resume_schedule(self, request: Request) -> Response:
        note = parse_note_request(await self._read_body(request, MAX_NOTE_BODY_BYTES)).note
        document = await self.store.resume_schedule(self._scoped(request), note)
        self._due_at(_time(document["nextRunAt"]))
        return self._respond(document)

    async def trigger_schedule(self, request: Request) -> Response:
        document, created = await self.store.trigger_schedule(self._scoped(request))
        self._wake()
        root = request.scope.get("root_path", "")
        return self._respond(
            document,
            status_code=201 if created else 200,
            headers={"Location": f"{root}/v1/workflows/{document['id']}"},
        )

    def _scoped(self, request: Request) -> str:
        """The stored id of the request's namespace's schedule (404 for an impossible id)."""
        value: str = request.path_params["schedule_id"]
        if not _SCHEDULE_ID.fullmatch(value):
            raise self._missing(request)
        return scoped_id(self._namespace(request), value)

    @staticmethod
    def _missing(request: Request) -> NotFound:
        return NotFound(f"no schedule '{str(request.path_params['schedule_id'])[:140]}'")


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None
