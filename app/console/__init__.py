"""The console at ``/ui``: server-rendered pages, a few ES modules, and their JSON routes.

Pages are Jinja templates (``templates/``) and the assets are files of the
package (``static/``), served from the same origin: no request leaves it, and
no build step is needed. The pages read and act through the ``/v1`` API with
the session cookie (see ``app.console.sessions``), plus the few console-only
JSON routes below for what ``/v1`` does not answer.

Routes:

- ``GET /`` → ``/ui``; ``GET /ui`` → the workflows page, or the login page.
- ``GET|POST /ui/login``, ``POST /ui/logout``.
- ``GET /ui/workflows`` (filters, search by id, paging) and ``GET /ui/workflows/{id}``.
- ``GET /ui/api/workflows`` (a page of summaries and per-status counts),
  ``GET /ui/api/workflows/{id}/timeline``, ``…/events``, ``…/callbacks`` and
  ``…/steps/{stepId}/request``.
- ``/ui/static/…``: the assets.

A workflow of another namespace is exactly a missing one: a 404.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from secrets import token_urlsafe
from typing import Any
from urllib.parse import parse_qs, urlencode

import orjson
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from app import __version__
from app.api import JSON, read_body
from app.console.replay import rebuild
from app.console.sessions import (
    CSRF_FIELD,
    SESSION_SECRET,
    Session,
    Sessions,
    check_csrf,
    login_token_matches,
    new_login_token,
    set_login_cookie,
)
from app.engine import DeliveryKind, StepStatus, WorkflowStatus
from app.errors import (
    BadRequest,
    FieldError,
    NotFound,
    ServiceUnavailable,
    StoreError,
    Unauthorized,
    ValidationFailed,
)
from app.layout import Layout, layout_dag
from app.logs import add_secrets
from app.schemas import ID_PATTERN, MAX_NAME_LENGTH
from app.settings import Settings
from app.store import Store
from app.store import console as reads
from app.tenants import NamespaceSigners, scoped_id

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

#: The console's sections, in navigation order: (key, label, path).
SECTIONS: list[tuple[str, str, str]] = [("workflows", "Workflows", "/ui/workflows")]
PAGE_SIZE = 50
EVENT_PAGE = 200
#: Layouts kept in memory (a workflow's graph never changes).
LAYOUT_CACHE = 64
#: Context or results shown inline up to this size; larger ones link to the JSON.
MAX_INLINE_JSON = 256 * 1024
MAX_FORM_BYTES = 16 * 1024
#: Quick time ranges of the workflows page.
RANGES = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(days=1)}
RANGES["7d"] = timedelta(days=7)
#: Step statuses in the order the console lists them.
STEP_STATUSES = [s.value for s in StepStatus]
WORKFLOW_STATUSES = [s.value for s in WorkflowStatus]
FINAL_STATUSES = ["completed", "failed", "cancelled", "compensated", "compensation_failed"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
_ID = re.compile(ID_PATTERN)
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class Console:
    """The console's routes; the lifespan sets what needs the database to be open."""

    def __init__(self, store: Store, *, env_keys: list[str], settings: Settings) -> None:
        self.store = store
        self.sessions = Sessions(
            env_keys=env_keys,
            hours=settings.ui_session_hours,
            find_key=reads.find_stored_key,
            key_namespace=reads.stored_key_namespace,
        )
        self.public_url = settings.public_url
        #: Set by ``start``: the callback-token key and the namespaces' signers.
        self.token_key: str | None = None
        self.signers: NamespaceSigners | None = None
        self.templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
        self.templates.env.filters["json_script"] = json_script
        self.templates.env.filters["pretty"] = pretty_json
        self.templates.env.globals.update(
            asset=self.asset,
            sections=SECTIONS,
            version=__version__,
            step_statuses=STEP_STATUSES,
        )
        self._assets = _asset_versions()
        self._layouts: OrderedDict[tuple[str, str], Layout] = OrderedDict()

    async def start(self, *, token_key: str, signers: NamespaceSigners) -> None:
        """Once the database is open: the session key (shared by every process on the
        database, made on first use) and what rebuilding requests needs."""
        new_key = token_urlsafe(32)
        add_secrets(new_key)  # hidden from logs before it is first stored
        secret = await self.store.server_secret(SESSION_SECRET, new_key)
        add_secrets(secret)
        self.sessions.start(secret)
        self.token_key, self.signers = token_key, signers

    def asset(self, path: str) -> str:
        """The URL of a static file, with its content hash so browsers cache it safely."""
        return f"/ui/static/{path}?v={self._assets.get(path, __version__)}"

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/ui", self.home, methods=["GET"], include_in_schema=False),
            Route("/ui/", self.home, methods=["GET"], include_in_schema=False),
            Route("/ui/login", self.login_page, methods=["GET"], include_in_schema=False),
            Route("/ui/login", self.login, methods=["POST"], include_in_schema=False),
            Route("/ui/logout", self.logout, methods=["POST"], include_in_schema=False),
            Route("/ui/workflows", self.workflows_page, methods=["GET"], include_in_schema=False),
            Route(
                "/ui/workflows/{workflow_id}",
                self.workflow_page,
                methods=["GET"],
                include_in_schema=False,
            ),
            Route(
                "/ui/api/workflows", self.workflows_data, methods=["GET"], include_in_schema=False
            ),
            Route(
                "/ui/api/workflows/{workflow_id}/timeline",
                self.timeline_data,
                methods=["GET"],
                include_in_schema=False,
            ),
            Route(
                "/ui/api/workflows/{workflow_id}/events",
                self.events_data,
                methods=["GET"],
                include_in_schema=False,
            ),
            Route(
                "/ui/api/workflows/{workflow_id}/callbacks",
                self.callbacks_data,
                methods=["GET"],
                include_in_schema=False,
            ),
            Route(
                "/ui/api/workflows/{workflow_id}/steps/{step_id}/request",
                self.request_data,
                methods=["GET"],
                include_in_schema=False,
            ),
            Mount("/ui/static", app=_Assets(directory=STATIC_DIR), name="console_static"),
        ]

    # ----------------------------------------------------------------- sessions

    async def _session(self, request: Request) -> Session | None:
        try:
            return await self.sessions.from_scope(request.scope)
        except StoreError as exc:
            raise ServiceUnavailable("the database is not answering; try again shortly") from exc

    async def _api_session(self, request: Request) -> Session:
        session = await self._session(request)
        if session is None:
            raise Unauthorized("log in to the console first (or use the /v1 API with a key)")
        return session

    def _to_login(self, request: Request) -> Response:
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        return RedirectResponse(f"/ui/login?{urlencode({'next': target})}", status_code=303)

    def _page(
        self, request: Request, template: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        return self.templates.TemplateResponse(
            request, template, context, status_code=status_code, headers=PAGE_HEADERS
        )

    # ----------------------------------------------------------------- entry and login

    async def home(self, request: Request) -> Response:
        if await self._session(request) is None:
            return RedirectResponse("/ui/login", status_code=303)
        return RedirectResponse("/ui/workflows", status_code=303)

    async def login_page(self, request: Request) -> Response:
        target = _safe_next(request.query_params.get("next"))
        if await self._session(request) is not None:
            return RedirectResponse(target, status_code=303)
        return self._login_form(request, target)

    def _login_form(
        self, request: Request, target: str, error: str | None = None, status_code: int = 200
    ) -> Response:
        token = new_login_token()
        response = self._page(
            request,
            "login.html",
            {"next": target, "csrf": token, "error": error, "session": None},
            status_code=status_code,
        )
        set_login_cookie(response, token, secure=request.url.scheme == "https")
        return response

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        target = _safe_next(form.get("next"))
        if not login_token_matches(request.scope, form.get(CSRF_FIELD)):
            return self._login_form(
                request,
                target,
                "This login form has expired. Paste the key again.",
                status_code=403,
            )
        try:
            session = await self.sessions.login(form.get("key", "").strip())
        except StoreError as exc:
            raise ServiceUnavailable("the database is not answering; try again shortly") from exc
        if session is None:
            return self._login_form(
                request, target, "That API key is not valid (or has been revoked).", 401
            )
        response = RedirectResponse(target, status_code=303)
        self.sessions.set_cookie(response, session, secure=request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        form = await _form(request)
        session = await self._session(request)
        if session is not None:
            check_csrf(session, form.get(CSRF_FIELD))
        response = RedirectResponse("/ui/login", status_code=303)
        self.sessions.clear_cookie(response, secure=request.url.scheme == "https")
        return response

    # ----------------------------------------------------------------- workflows

    async def workflows_page(self, request: Request) -> Response:
        session = await self._session(request)
        if session is None:
            return self._to_login(request)
        params = request.query_params
        errors: list[FieldError] = []
        where = _filter(session.namespace, params, errors)
        query = params.get("q", "").strip()
        if query and not errors and _ID.fullmatch(query) and not params.get("cursor"):
            scoped = scoped_id(session.namespace, query)
            if await self.store.workflow_exists(scoped):
                return RedirectResponse(f"/ui/workflows/{query}", status_code=303)
        items: list[dict[str, Any]] = []
        next_cursor = None
        counts = {s: 0 for s in WORKFLOW_STATUSES}
        if not errors:
            try:
                items, next_cursor = await reads.list_workflows(
                    where, limit=PAGE_SIZE, cursor=params.get("cursor") or None
                )
            except ValueError:
                errors.append(FieldError("cursor", "is not a cursor this server handed out"))
            counts = await reads.count_by_status(where)
        filters = {k: params.get(k, "") for k in ("status", "name", "q", "range", "from", "to")}
        next_url = None
        if next_cursor:
            next_url = "/ui/workflows?" + urlencode(
                {**{k: v for k, v in filters.items() if v}, "cursor": next_cursor}
            )
        return self._page(
            request,
            "workflows.html",
            {
                "session": session,
                "section": "workflows",
                "items": items,
                "counts": counts,
                "total": sum(counts.values()),
                "filters": filters,
                "errors": errors,
                "names": await reads.workflow_names(session.namespace),
                "statuses": WORKFLOW_STATUSES,
                "ranges": list(RANGES),
                "next_url": next_url,
                "paged": bool(params.get("cursor")),
                "final_statuses": FINAL_STATUSES,
            },
            status_code=422 if errors else 200,
        )

    async def workflows_data(self, request: Request) -> Response:
        session = await self._api_session(request)
        errors: list[FieldError] = []
        where = _filter(session.namespace, request.query_params, errors)
        if errors:
            raise ValidationFailed(errors, "The query parameters are not valid.")
        try:
            items, next_cursor = await reads.list_workflows(
                where, limit=PAGE_SIZE, cursor=request.query_params.get("cursor") or None
            )
        except ValueError as exc:
            raise ValidationFailed(
                [FieldError("cursor", "is not a cursor this server handed out")]
            ) from exc
        counts = await reads.count_by_status(where)
        return JSON({"items": items, "nextCursor": next_cursor, "counts": counts})

    # ----------------------------------------------------------------- one workflow

    async def workflow_page(self, request: Request) -> Response:
        session = await self._session(request)
        if session is None:
            return self._to_login(request)
        public = request.path_params["workflow_id"]
        scoped = scoped_id(session.namespace, public) if _ID.fullmatch(public) else None
        # The last event first: whatever happens after it reaches the page by the stream.
        last_event = await reads.last_event_id(scoped) if scoped else 0
        document = await self.store.get_workflow(scoped) if scoped else None
        if scoped is None or document is None:
            return self._page(
                request,
                "not_found.html",
                {"session": session, "section": "workflows", "workflow_id": public},
                status_code=404,
            )
        layout = self._layout(scoped, document)
        steps = document["steps"]
        index = {s["id"]: i for i, s in enumerate(steps)}
        by_id = {s["id"]: s for s in steps}
        step_counts = {status: 0 for status in STEP_STATUSES}
        for s in steps:
            step_counts[s["status"]] += 1
        groups = {
            node.id: _counts(by_id[m]["status"] for m in node.members) for node in layout.groups
        }
        data = {
            "workflowId": document["id"],
            "status": document["status"],
            "lastEventId": last_event,
            "final": FINAL_STATUSES,
            "steps": [
                [
                    s["id"],
                    s["status"],
                    s["attempts"],
                    s["maxAttempts"],
                    s["compensationStatus"],
                    1 if s["compensation"] else 0,
                ]
                for s in steps
            ],
            "groups": {node.id: [index[m] for m in node.members] for node in layout.groups},
            "callbacks": await reads.callback_states(scoped),
            "selected": request.query_params.get("step"),
        }
        context_json = pretty_json(document["context"])
        results_json = pretty_json(document["results"])
        return self._page(
            request,
            "workflow.html",
            {
                "session": session,
                "section": "workflows",
                "wf": document,
                "layout": layout,
                "by_id": by_id,
                "groups": groups,
                "step_counts": step_counts,
                "compensations": [s for s in steps if s["compensation"]],
                "callbacks": data["callbacks"],
                "data": data,
                "context_json": context_json if len(context_json) <= MAX_INLINE_JSON else None,
                "results_json": results_json if len(results_json) <= MAX_INLINE_JSON else None,
                "final_statuses": FINAL_STATUSES,
            },
        )

    def _layout(self, scoped: str, document: dict[str, Any]) -> Layout:
        key = (scoped, document["createdAt"])
        layout = self._layouts.get(key)
        if layout is None:
            layout = layout_dag([(s["id"], s["dependsOn"]) for s in document["steps"]])
            self._layouts[key] = layout
            while len(self._layouts) > LAYOUT_CACHE:
                self._layouts.popitem(last=False)
        else:
            self._layouts.move_to_end(key)
        return layout

    async def _owned(self, request: Request) -> tuple[Session, str, str]:
        """(session, public id, scoped id) of the path's workflow; 404 unless it is the
        session's namespace's."""
        session = await self._api_session(request)
        public = request.path_params["workflow_id"]
        if not _ID.fullmatch(public):
            raise NotFound(f"no workflow '{public[:140]}'")
        scoped = scoped_id(session.namespace, public)
        if not await self.store.workflow_exists(scoped):
            raise NotFound(f"no workflow '{public}'")
        return session, public, scoped

    async def timeline_data(self, request: Request) -> Response:
        _, _, scoped = await self._owned(request)
        return JSON(
            {"attempts": await reads.timeline(scoped), "now": datetime.now(UTC).timestamp() * 1000}
        )

    async def events_data(self, request: Request) -> Response:
        _, _, scoped = await self._owned(request)
        raw = request.query_params.get("before")
        before = None
        if raw:
            try:
                before = int(raw)
                if not 0 < before < 2**63:
                    raise ValueError(raw)
            except ValueError as exc:
                raise ValidationFailed(
                    [FieldError("before", "must be an event id this server sent")]
                ) from exc
        items = await reads.events_before(scoped, before=before, limit=EVENT_PAGE)
        more = len(items) == EVENT_PAGE
        return JSON({"items": items, "nextBefore": items[-1]["id"] if more else None})

    async def callbacks_data(self, request: Request) -> Response:
        _, _, scoped = await self._owned(request)
        return JSON(
            {
                "states": await reads.callback_states(scoped),
                "attempts": await reads.callback_attempts(scoped),
            }
        )

    async def request_data(self, request: Request) -> Response:
        _, public, scoped = await self._owned(request)
        step_id = request.path_params["step_id"]
        params = request.query_params
        try:
            kind = DeliveryKind(params.get("kind", "step"))
            if kind not in (DeliveryKind.STEP, DeliveryKind.COMPENSATION):
                raise ValueError(kind)
        except ValueError as exc:
            raise ValidationFailed([FieldError("kind", "must be step or compensation")]) from exc
        try:
            number = int(params.get("attempt", ""))
        except ValueError as exc:
            raise ValidationFailed([FieldError("attempt", "must be an attempt number")]) from exc
        step = await self.store.get_step(scoped, step_id) if _ID.fullmatch(step_id) else None
        if step is None:
            raise NotFound(f"workflow '{public}' has no step '{step_id[:140]}'")
        attempt = next(
            (
                a
                for a in reversed(step["attemptLog"])
                if a["kind"] == kind.value and a["number"] == number
            ),
            None,
        )
        if attempt is None:
            raise NotFound(f"step '{step_id}' has no {kind.value} attempt {number}")
        if self.token_key is None or self.signers is None:
            raise ServiceUnavailable("the server is still starting")
        document = await self.store.get_workflow(scoped)
        run_id = await reads.step_run(scoped, step_id)
        if document is None or run_id is None:
            raise NotFound(f"no workflow '{public}'")
        signer = await self.signers.for_workflow(scoped)
        replay = rebuild(
            document,
            scoped,
            step_id,
            kind=kind,
            attempt=attempt,
            run_id=run_id,
            signer=signer,
            token_key=self.token_key,
            public_url=self.public_url,
        )
        if replay is None:
            return JSON(
                {
                    "available": False,
                    "reason": "This attempt belongs to an earlier run of the step (before a "
                    "retry); only the current run's requests can be shown.",
                }
            )
        fresh = replay.signed_at(signer, datetime.now(UTC))
        return JSON(
            {
                "available": True,
                "url": replay.url,
                "headers": replay.headers,
                "body": replay.body.decode(),
                "curl": fresh.curl(),
            }
        )


# --------------------------------------------------------------------------- helpers


class _Assets(StaticFiles):
    """The console's files, revalidated on every use (a 304 when unchanged): the ES
    modules import each other by plain paths, so a new version must never meet a
    cached old one."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def _filter(namespace: str, params: Any, errors: list[FieldError]) -> reads.WorkflowFilter:
    status = params.get("status") or None
    if status is not None and status not in WORKFLOW_STATUSES:
        errors.append(FieldError("status", f"must be one of {', '.join(WORKFLOW_STATUSES)}"))
    name = params.get("name") or None
    if name is not None and (len(name) > MAX_NAME_LENGTH or "\x00" in name):
        errors.append(FieldError("name", f"is at most {MAX_NAME_LENGTH} characters"))
    prefix = params.get("q", "").strip() or None
    if prefix is not None and not _PREFIX.fullmatch(prefix):
        errors.append(FieldError("q", "is the start of a workflow id (letters, digits, _.:-)"))
    created_from = created_to = None
    quick = params.get("range") or None
    if quick is not None:
        if quick in RANGES:
            created_from = datetime.now(UTC) - RANGES[quick]
        elif quick != "custom":
            errors.append(FieldError("range", f"must be one of {', '.join(RANGES)} or custom"))
    if quick in (None, "custom"):
        created_from = _time(params.get("from"), "from", errors)
        created_to = _time(params.get("to"), "to", errors)
    return reads.WorkflowFilter(
        namespace=namespace,
        status=status,
        name=name,
        id_prefix=prefix,
        created_from=created_from,
        created_to=created_to,
    )


def _time(value: str | None, field: str, errors: list[FieldError]) -> datetime | None:
    """An ISO time (``2026-01-31T10:00``, UTC unless it says otherwise), or None."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        errors.append(FieldError(field, "must be a date and time such as 2026-01-31T10:00"))
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _counts(statuses: Any) -> dict[str, int]:
    counts = {status: 0 for status in STEP_STATUSES}
    for status in statuses:
        counts[status] += 1
    return counts


def _safe_next(value: str | None) -> str:
    """Where to go after logging in: a console path of this server, never elsewhere."""
    if (
        value
        and value.startswith("/ui/")
        and not value.startswith("/ui/login")
        and "//" not in value
        and "\\" not in value
        and all(32 < ord(c) < 127 for c in value)
    ):
        return value
    return "/ui/workflows"


async def _form(request: Request) -> dict[str, str]:
    """A small url-encoded form (the console's own forms: login and logout)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise BadRequest("send the form as application/x-www-form-urlencoded")
    raw = await read_body(request, MAX_FORM_BYTES)
    try:
        fields = parse_qs(raw.decode(), max_num_fields=10, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("the form is not valid") from exc
    return {k: v[0] for k, v in fields.items() if v}


def json_script(value: Any) -> Markup:
    """JSON safe to put inside a ``<script type="application/json">`` element."""
    text = orjson.dumps(value).decode()
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)


def pretty_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _asset_versions() -> dict[str, str]:
    versions = {}
    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            versions[path.relative_to(STATIC_DIR).as_posix()] = digest
    return versions
