"""``baton``: the command line over the client.

::

    baton workflows create FILE | get ID | list | watch ID | cancel ID | retry ID | events ID
    baton jobs enqueue QUEUE | get ID | list | retry ID
    baton queues list | pause QUEUE | resume QUEUE
    baton dlq replay QUEUE
    baton schedules list | put ID FILE | pause ID | resume ID | trigger ID

The server and key come from ``BATON_URL`` and ``BATON_API_KEY``, or ``--url`` and
``--api-key`` (which win). Output is for people by default; ``--json`` (anywhere on the
line) prints the API's JSON documents instead: one document, or one per line for
``events`` and ``watch``.

Exit codes:

====  ================================================================================
0     done (``watch``: the workflow completed)
1     ``watch``: the workflow ended another way (failed, cancelled, compensated, …)
2     the command line or an input file is wrong
3     the server refused the request (a problem document: 4xx or 5xx)
4     the server could not be reached, or did not answer in time
130   interrupted (Ctrl-C)
====  ================================================================================

An error is one line on standard error (``baton: 404 Not Found: …``), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from baton import __version__
from baton.client import Client
from baton.documents import Page, WorkflowStatus
from baton.errors import APIConnectionError, BatonError, ProblemError

__all__ = ["main"]

EXIT_OK = 0
EXIT_NOT_COMPLETED = 1
EXIT_USAGE = 2
EXIT_PROBLEM = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130

#: How statuses look in human output.
STYLES = {
    "completed": ("✓", "green"),
    "running": ("▶", "cyan"),
    "retrying": ("↻", "yellow"),
    "pending": ("·", "dim"),
    "failed": ("✗", "red"),
    "cancelled": ("⊘", "magenta"),
    "skipped": ("↷", "dim"),
    "compensating": ("↺", "yellow"),
    "compensated": ("↺", "yellow"),
    "compensation_failed": ("✗", "red"),
    "claimed": ("▶", "cyan"),
    "dlq": ("✗", "red"),
}


class UsageError(Exception):
    """The command line or an input file is wrong (exit 2)."""


class Output:
    """Where results go: JSON documents, or rich text for people."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(highlight=False, soft_wrap=True)

    def document(self, document: Any, render: Callable[[Any], Any]) -> None:
        if self.as_json:
            self.json(document)
        else:
            self.console.print(render(document))

    def json(self, document: Any) -> None:
        print(json.dumps(document, ensure_ascii=False), flush=True)


def status_text(status: str | None) -> Text:
    mark, style = STYLES.get(status or "", ("?", ""))
    return Text(f"{mark} {status}", style=style)


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


# --- renderers --------------------------------------------------------------------------


def workflow_tree(doc: Mapping[str, Any]) -> Tree:
    """The workflow and its steps, each with its status, attempts and dependencies."""
    label = Text.assemble((str(doc.get("id")), "bold"), "  ", status_text(doc.get("status")))
    if doc.get("name"):
        label.append(f"  {doc['name']}", style="dim")
    tree = Tree(label)
    for step in doc.get("steps") or ():
        line = Text.assemble((str(step.get("id")), "bold"), "  ", status_text(step.get("status")))
        attempts, most = step.get("attempts"), step.get("maxAttempts")
        if attempts:
            line.append(f"  attempt {attempts}/{most}", style="dim")
        if step.get("dependsOn"):
            line.append(f"  ← {', '.join(step['dependsOn'])}", style="dim")
        if step.get("compensationStatus"):
            line.append(f"  compensation {step['compensationStatus']}", style="yellow")
        error = step.get("error")
        if error and step.get("status") in ("failed", "retrying"):
            line.append(f"  {error.get('code')}: {error.get('message')}", style="red")
        tree.add(line)
    error = doc.get("error")
    if error:
        tree.add(Text(f"error {error.get('code')}: {error.get('message')}", style="red"))
    return tree


def workflow_list(page: Page[Any]) -> Any:
    table = _table("ID", "STATUS", "NAME", "CREATED", "STEPS")
    for item in page.items:
        table.add_row(
            item.get("id"),
            status_text(item.get("status")),
            _cell(item.get("name")),
            _cell(item.get("createdAt")),
            _cell(item.get("stepCount")),
        )
    return _with_cursor(table, page)


def _with_cursor(table: Table, page: Page[Any]) -> Any:
    if page.next_cursor is None:
        return table
    return Tree(table, hide_root=False).add(Text(f"more: --cursor {page.next_cursor}", "dim"))


def event_line(event: Mapping[str, Any]) -> Text:
    line = Text(f"{event.get('id'):>6}  {event.get('at')}  ", style="dim")
    line.append(str(event.get("type")), style="bold")
    if event.get("stepId"):
        line.append(f"  {event['stepId']}")
    if event.get("data"):
        line.append(f"  {json.dumps(event['data'], ensure_ascii=False)}", style="dim")
    return line


def job_view(job: Mapping[str, Any]) -> Any:
    table = _table("FIELD", "VALUE")
    for name in (
        "id",
        "queue",
        "status",
        "priority",
        "attempts",
        "maxRetries",
        "scheduledFor",
        "nextAttemptAt",
        "createdAt",
        "completedAt",
        "workerId",
        "lastError",
    ):
        if job.get(name) is not None:
            table.add_row(name, status_text(job[name]) if name == "status" else _cell(job[name]))
    for name in ("payload", "result", "workflow"):
        if job.get(name) is not None:
            table.add_row(name, json.dumps(job[name], ensure_ascii=False))
    return table


def job_list(page: Page[Any]) -> Any:
    table = _table("ID", "QUEUE", "STATUS", "PRIORITY", "ATTEMPTS", "CREATED")
    for job in page.items:
        table.add_row(
            job.get("id"),
            _cell(job.get("queue")),
            status_text(job.get("status")),
            _cell(job.get("priority")),
            _cell(job.get("attempts")),
            _cell(job.get("createdAt")),
        )
    return _with_cursor(table, page)


def queue_list(page: Page[Any]) -> Any:
    table = _table("QUEUE", "STATE", "PENDING", "CLAIMED", "FAILED", "DLQ", "COMPLETED", "OLDEST")
    for queue in page.items:
        counts = queue.get("counts") or {}
        table.add_row(
            queue.get("name"),
            "paused" if queue.get("paused") else "active",
            *(_cell(counts.get(k)) for k in ("pending", "claimed", "failed", "dlq", "completed")),
            _cell(queue.get("oldestPendingAt")),
        )
    return table


def queue_line(queue: Mapping[str, Any]) -> Text:
    state = "paused" if queue.get("paused") else "active"
    return Text(f"queue {queue.get('name')}: {state}")


def schedule_list(page: Page[Any]) -> Any:
    table = _table("ID", "WHEN", "STATE", "NEXT RUN", "LAST RUN", "FIRED")
    for schedule in page.items:
        when = schedule.get("cron") or f"every {schedule.get('every')} s"
        table.add_row(
            schedule.get("id"),
            when,
            "paused" if schedule.get("paused") else "active",
            _cell(schedule.get("nextRunAt")),
            _cell(schedule.get("lastRunAt")),
            _cell(schedule.get("firedCount")),
        )
    return table


def schedule_line(schedule: Mapping[str, Any]) -> Text:
    state = "paused" if schedule.get("paused") else "active"
    return Text(f"schedule {schedule.get('id')}: {state}, next run {schedule.get('nextRunAt')}")


# --- commands ---------------------------------------------------------------------------


def read_json(path: str, what: str) -> Any:
    """The JSON document in file ``path`` (``-``: standard input)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} {path} is not JSON: {exc}") from None


def json_argument(text: str) -> Any:
    """A ``--payload`` value: JSON text, or ``@FILE``."""
    if text.startswith("@"):
        return read_json(text[1:], "payload file")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--payload is not JSON: {exc}") from None


def watch(client: Client, out: Output, workflow_id: str) -> int:
    """Follow the workflow's events, redrawing its tree; exit 0 only if it completed."""
    doc = client.workflows.get(workflow_id)
    if out.as_json:
        for event in client.workflows.events(workflow_id, follow=True):
            out.json(event)
        doc = client.workflows.get(workflow_id)
        out.json(doc)
    else:
        with Live(workflow_tree(doc), console=out.console, auto_refresh=False) as live:
            if not doc.finished:
                for _event in client.workflows.events(workflow_id, follow=True):
                    doc = client.workflows.get(workflow_id)
                    live.update(workflow_tree(doc), refresh=True)
                doc = client.workflows.get(workflow_id)
                live.update(workflow_tree(doc), refresh=True)
    return EXIT_OK if doc.get("status") == WorkflowStatus.COMPLETED else EXIT_NOT_COMPLETED


Command = Callable[[argparse.Namespace, Client, Output], int | None]


def _page(out: Output, page: Page[Any], render: Callable[[Page[Any]], Any]) -> None:
    # --json prints the answer as the server gave it ({"items", "nextCursor"}).
    out.document(page.raw, lambda _: render(page))


def _retry(args: argparse.Namespace, c: Client, out: Output) -> None:
    doc = c.workflows.retry_step(args.id, args.step) if args.step else c.workflows.retry(args.id)
    out.document(doc, workflow_tree)


def _events(args: argparse.Namespace, c: Client, out: Output) -> None:
    for event in c.workflows.events(args.id, follow=args.follow, after=args.after):
        out.document(event, event_line)


def _enqueue(args: argparse.Namespace, c: Client, out: Output) -> None:
    payload = json_argument(args.payload) if args.payload is not None else None
    job = c.jobs.enqueue(
        args.queue,
        payload,
        priority=args.priority,
        max_retries=args.max_retries,
        idempotency_key=args.idempotency_key,
        scheduled_for=args.scheduled_for,
        visibility_timeout=args.visibility_timeout,
    )
    out.document(job, job_view)


def _replay(args: argparse.Namespace, c: Client, out: Output) -> None:
    replayed = c.queues.replay_dlq(args.queue, limit=args.limit)
    out.document({"replayed": replayed}, lambda d: f"replayed {d['replayed']} job(s)")


def _trigger(args: argparse.Namespace, c: Client, out: Output) -> None:
    answer = c.schedules.trigger(args.id)
    fired = f": workflow {answer['id']}" if answer.get("id") else ""
    out.document(answer, lambda _: f"schedule {args.id} fired{fired}")


COMMANDS: dict[tuple[str, str], Command] = {
    ("workflows", "create"): lambda a, c, o: o.document(
        c.workflows.create(read_json(a.file, "workflow file")), workflow_tree
    ),
    ("workflows", "get"): lambda a, c, o: o.document(c.workflows.get(a.id), workflow_tree),
    ("workflows", "list"): lambda a, c, o: _page(
        o,
        c.workflows.list(status=a.status, name=a.name, limit=a.limit, cursor=a.cursor),
        workflow_list,
    ),
    ("workflows", "watch"): lambda a, c, o: watch(c, o, a.id),
    ("workflows", "cancel"): lambda a, c, o: o.document(
        c.workflows.cancel(a.id, compensate=a.compensate), workflow_tree
    ),
    ("workflows", "retry"): _retry,
    ("workflows", "events"): _events,
    ("jobs", "enqueue"): _enqueue,
    ("jobs", "get"): lambda a, c, o: o.document(c.jobs.get(a.id), job_view),
    ("jobs", "list"): lambda a, c, o: _page(
        o, c.jobs.list(queue=a.queue, status=a.status, limit=a.limit, cursor=a.cursor), job_list
    ),
    ("jobs", "retry"): lambda a, c, o: o.document(c.jobs.retry(a.id), job_view),
    ("queues", "list"): lambda a, c, o: _page(o, c.queues.list(), queue_list),
    ("queues", "pause"): lambda a, c, o: o.document(c.queues.pause(a.queue), queue_line),
    ("queues", "resume"): lambda a, c, o: o.document(c.queues.resume(a.queue), queue_line),
    ("dlq", "replay"): _replay,
    ("schedules", "list"): lambda a, c, o: _page(o, c.schedules.list(), schedule_list),
    ("schedules", "put"): lambda a, c, o: o.document(
        c.schedules.put(a.id, read_json(a.file, "schedule file")), schedule_line
    ),
    ("schedules", "pause"): lambda a, c, o: o.document(c.schedules.pause(a.id), schedule_line),
    ("schedules", "resume"): lambda a, c, o: o.document(c.schedules.resume(a.id), schedule_line),
    ("schedules", "trigger"): _trigger,
}


# --- the command line -------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"baton: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    common = Parser(add_help=False)
    # SUPPRESS: an option given before the command is not reset by the command's own copy.
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="the server (default: $BATON_URL, else http://127.0.0.1:8000)",
    )
    common.add_argument(
        "--api-key", default=argparse.SUPPRESS, help="the API key (default: $BATON_API_KEY)"
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the API's JSON documents",
    )
    common.add_argument(
        "--timeout",
        type=float,
        default=argparse.SUPPRESS,
        help="seconds one request may take (default 30)",
    )

    parser = Parser(
        prog="baton",
        description="Baton's command line.",
        parents=[common],
        epilog="Exit codes: 0 done, 1 watched workflow did not complete, 2 usage, "
        "3 refused by the server, 4 server unreachable.",
    )
    parser.add_argument("--version", action="version", version=f"baton {__version__}")
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")

    def group(name: str, help: str) -> Any:
        sub = groups.add_parser(name, help=help, parents=[common])
        return sub.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        commands: Any, name: str, help: str, *arguments: tuple[Sequence[str], dict[str, Any]]
    ) -> Any:
        sub = commands.add_parser(name, help=help, parents=[common])
        for flags, options in arguments:
            sub.add_argument(*flags, **options)
        return sub

    listing: tuple[tuple[list[str], dict[str, Any]], ...] = (
        (["--limit"], {"type": int}),
        (["--cursor"], {}),
    )
    wf = group("workflows", "create, read and act on workflows")
    command(wf, "create", "create a workflow from a JSON file (- for stdin)", (["file"], {}))
    command(wf, "get", "show a workflow", (["id"], {}))
    command(
        wf, "list", "list workflows, newest first", (["--status"], {}), (["--name"], {}), *listing
    )
    command(
        wf, "watch", "draw a workflow live until it ends (exit 0 if it completed)", (["id"], {})
    )
    command(
        wf,
        "cancel",
        "cancel a workflow",
        (["id"], {}),
        (["--compensate"], {"action": "store_true", "help": "compensate completed steps"}),
    )
    command(
        wf,
        "retry",
        "retry a failed workflow (or one step and what follows it)",
        (["id"], {}),
        (["--step"], {"help": "retry only this step and its dependents"}),
    )
    command(
        wf,
        "events",
        "print a workflow's events",
        (["id"], {}),
        (["--follow", "-f"], {"action": "store_true", "help": "stream until it ends"}),
        (["--after"], {"help": "only events after this event id"}),
    )

    jobs = group("jobs", "enqueue and read jobs")
    command(
        jobs,
        "enqueue",
        "add a job to a queue",
        (["queue"], {}),
        (["--payload"], {"help": "a JSON object, or @FILE"}),
        (["--priority"], {"type": int}),
        (["--max-retries"], {"type": int}),
        (["--idempotency-key"], {}),
        (["--scheduled-for"], {"help": "an ISO 8601 time"}),
        (["--visibility-timeout"], {"type": float}),
    )
    command(jobs, "get", "show a job", (["id"], {}))
    command(
        jobs, "list", "list jobs, newest first", (["--queue"], {}), (["--status"], {}), *listing
    )
    command(jobs, "retry", "put a failed, dead-lettered or cancelled job back", (["id"], {}))

    queues = group("queues", "list, pause and resume queues")
    command(queues, "list", "list queues with their counts")
    command(queues, "pause", "stop handing out a queue's jobs", (["queue"], {}))
    command(queues, "resume", "hand out a queue's jobs again", (["queue"], {}))

    dlq = group("dlq", "the dead-letter queues")
    command(
        dlq,
        "replay",
        "put dead-lettered jobs back to pending",
        (["queue"], {}),
        (["--limit"], {"type": int}),
    )

    schedules = group("schedules", "recurring workflows")
    command(schedules, "list", "list schedules")
    command(
        schedules,
        "put",
        "create or replace a schedule from a JSON file",
        (["id"], {}),
        (["file"], {}),
    )
    command(schedules, "pause", "stop a schedule firing", (["id"], {}))
    command(schedules, "resume", "let a schedule fire again", (["id"], {}))
    command(schedules, "trigger", "fire a schedule now, once", (["id"], {}))
    return parser


def main(argv: Iterable[str] | None = None, *, transport: httpx.BaseTransport | None = None) -> int:
    """Run the command line; returns the exit code (``transport``: for tests)."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    out = Output(getattr(args, "json", False))
    try:
        with Client(
            getattr(args, "url", None),
            api_key=getattr(args, "api_key", None),
            timeout=getattr(args, "timeout", None),
            transport=transport,
        ) as client:
            return COMMANDS[args.group, args.command](args, client, out) or EXIT_OK
    except UsageError as exc:
        return fail(EXIT_USAGE, str(exc))
    except ProblemError as exc:
        return fail(EXIT_PROBLEM, str(exc))
    except APIConnectionError as exc:
        return fail(EXIT_UNREACHABLE, f"cannot reach the server: {exc}")
    except BatonError as exc:
        return fail(EXIT_PROBLEM, str(exc))
    except KeyboardInterrupt:
        return fail(EXIT_INTERRUPTED, "interrupted")
    except BrokenPipeError:
        # `baton … | head`: the reader left; nothing more to say.
        sys.stderr.close()
        return EXIT_OK


def fail(code: int, message: str) -> int:
    print(f"baton: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
