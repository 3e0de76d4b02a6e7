"""Real processes for the end-to-end tests: Baton servers, the handler app, and clients.

- ``BatonServer`` runs ``uvicorn app.main:app`` on a free loopback port, configured only
  by environment, with its output in a log file. It can be started with extra
  environment (and extra uvicorn arguments such as ``--workers 2``), stopped (SIGTERM,
  then SIGKILL), killed with SIGKILL, and restarted on the same database and port. A
  process expected to refuse to start is ``launch()``-ed and ``wait_exit()``-ed instead.
- ``HandlerApp`` runs ``handler_app.py`` (the scripted step/callback handler) the same way;
  ``HandlerClient`` drives its control API.
- ``BatonClient`` is a small synchronous client for the ``/v1`` API with polling helpers.
- ``BatonFactory`` starts servers for a test and stops them (and drops their databases);
  ``postgres_url(admin_url)`` gives several servers one fresh PostgreSQL database.
- ``postgres_database`` makes a fresh PostgreSQL database for a server and drops it after.

The module imports nothing from ``app``: the tests treat the server as a black box.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent

DEFAULT_START_TIMEOUT = 20.0
DEFAULT_STOP_TIMEOUT = 10.0
DEFAULT_WAIT_TIMEOUT = 20.0
POLL_INTERVAL = 0.05

#: Workflow statuses nothing happens after without an explicit action.
TERMINAL_STATUSES = frozenset(
    {"completed", "failed", "cancelled", "compensated", "compensation_failed"}
)

_ADDRESS_IN_USE = ("address already in use", "errno 98")

#: An admin URL of a PostgreSQL server; when set, servers get fresh databases there.
POSTGRES_ENV = "BATON_E2E_POSTGRES_URL"


class ServerStartError(RuntimeError):
    """A server process exited or never answered its readiness probe."""


def free_port() -> int:
    """A loopback port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def random_signing_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def random_api_key() -> str:
    return "bk_" + secrets.token_urlsafe(24)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has spent so far, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name: state is field 3, utime and stime fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_memory_kib(pid: int) -> int:
    """The most resident memory a process has had (``VmHWM``), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise LookupError(f"no VmHWM for process {pid}")


def tail(path: Path, lines: int = 80) -> str:
    """The last ``lines`` lines of a log file, or a note saying it is missing."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"<{path} does not exist>"
    return "\n".join(text.splitlines()[-lines:])


class UvicornProcess:
    """One uvicorn subprocess on a loopback port, output appended to ``log_path``."""

    #: Path polled until it answers 200.
    ready_path = "/"
    label = "server"

    def __init__(self, *, log_path: Path, port: int | None = None, cwd: Path = PROJECT_ROOT):
        self.log_path = log_path
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._reaped = True

    # What subclasses decide.
    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 80) -> str:
        return tail(self.log_path, lines)

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Start the process and wait until ``ready_path`` answers 200."""
        if self.is_running():
            raise RuntimeError(f"{self.label} is already running (pid {self.pid})")
        for attempt in range(5):
            self._spawn()
            try:
                self._wait_ready(timeout)
                return
            except ServerStartError:
                if self.is_running() or not self._lost_port_race():
                    self.stop()
                    raise
                self._reap()
            # Another process took the port between choosing it and binding it.
            if self._fixed_port:
                time.sleep(0.2 * (attempt + 1))
            else:
                self.port = free_port()
        raise ServerStartError(
            f"{self.label} could not bind a port\n--- {self.log_path} ---\n{self.log_tail()}"
        )

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._note(f"did not stop within {timeout:.0f} s of SIGTERM; sending SIGKILL")
                self.process.kill()
                self.process.wait()
        return self._reap()

    def kill(self) -> int | None:
        """``kill -9``: no shutdown of any kind."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        return self._reap()

    def restart(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Stop (if running) and start again on the same port with the same environment."""
        self.stop()
        self._fixed_port = True
        self.start(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it to be ready (e.g. one that should refuse).

        Follow with ``wait_exit()``; ``stop()`` still ends it if it does not exit.
        """
        if self.is_running():
            raise RuntimeError(f"{self.label} is already running (pid {self.pid})")
        self._spawn()

    def wait_exit(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the process to exit on its own.

        Returns its exit code (negative: the signal that ended it), or ``None`` if it is
        still running (it is left running).
        """
        if self.process is None:
            return None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self._reap()

    def __enter__(self) -> UvicornProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Internals.
    def _spawn(self) -> None:
        self.starts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = self.command()
        self._reaped = False
        with open(self.log_path, "ab") as log:
            log.write(
                f"=== {self.label} start #{self.starts} on port {self.port}: "
                f"{' '.join(command)}\n".encode()
            )
            log.flush()
            # The child keeps its own copy of the descriptor; ours closes with the block.
            self.process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        with httpx.Client(base_url=self.url, timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise ServerStartError(
                        f"{self.label} exited with code {self.process.returncode} before it "
                        f"was ready\n--- {self.log_path} ---\n{self.log_tail()}"
                    )
                try:
                    response = client.get(self.ready_path)
                    if response.status_code == 200:
                        return
                    last_error = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.1)
        raise ServerStartError(
            f"{self.label} did not answer GET {self.ready_path} with 200 within {timeout:.0f} s "
            f"(last: {last_error})\n--- {self.log_path} ---\n{self.log_tail()}"
        )

    def _lost_port_race(self) -> bool:
        text = self.log_tail(20).lower()
        return any(marker in text for marker in _ADDRESS_IN_USE)

    def _reap(self) -> int | None:
        if self.process is None:
            return None
        code = self.process.wait()
        if not self._reaped:
            self._reaped = True
            self._note(f"exited with code {code}")
        return code

    def _note(self, message: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"=== {self.label} (pid {self.pid}) {message}\n")


def base_environment() -> dict[str, str]:
    # The parent's BATON_* variables must not leak into a server under test.
    env = {key: value for key, value in os.environ.items() if not key.startswith("BATON_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class BatonServer(UvicornProcess):
    """``uvicorn app.main:app`` configured only by environment.

    ``data_dir`` holds the SQLite database (unless ``database_url`` points elsewhere,
    e.g. at PostgreSQL) and the log file. ``extra_env`` is added last and wins.
    ``extra_args`` are appended to the uvicorn command line (e.g. ``["--workers", "2"]``).
    """

    ready_path = "/readyz"
    label = "baton"

    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        api_key: str | None = None,
        signing_secret: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
    ):
        data_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(log_path=log_path or data_dir / "baton.log", port=port)
        self.data_dir = data_dir
        self.database_url = database_url or f"sqlite://{data_dir}/baton.sqlite3"
        self.api_key = api_key or random_api_key()
        self.signing_secret = signing_secret or random_signing_secret()
        self.extra_env: dict[str, str] = dict(extra_env or {})
        self.extra_args: list[str] = list(extra_args)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = base_environment()
        env.update(
            {
                "BATON_DATABASE_URL": self.database_url,
                "BATON_DATA_DIR": str(self.data_dir),
                "BATON_API_KEYS": self.api_key,
                "BATON_SIGNING_SECRETS": self.signing_secret,
                "BATON_ALLOW_PRIVATE_NETWORKS": "true",
                "BATON_PUBLIC_URL": self.url,
                "BATON_LOG_LEVEL": "info",
            }
        )
        env.update(self.extra_env)
        return env

    def restart(
        self,
        timeout: float = DEFAULT_START_TIMEOUT,
        *,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        """Restart on the same database and port, optionally with more environment."""
        if extra_env:
            self.extra_env.update(extra_env)
        super().restart(timeout)

    def client(self, **kwargs: Any) -> BatonClient:
        """A ``BatonClient`` with this server's API key; close it when done."""
        return BatonClient(self.url, self.api_key, **kwargs)


class HandlerApp(UvicornProcess):
    """The scripted handler of ``handler_app.py`` in its own uvicorn process."""

    ready_path = "/_control/health"
    label = "handler"

    def __init__(self, log_path: Path, signing_secret: str, *, port: int | None = None):
        super().__init__(log_path=log_path, port=port)
        self.signing_secret = signing_secret

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(E2E_DIR),
            "handler_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            # Longer than any client's idle pool expiry, so an idle connection is
            # never closed under a request that is about to be sent on it.
            "--timeout-keep-alive",
            "75",
        ]

    def environment(self) -> dict[str, str]:
        env = base_environment()
        env["HANDLER_SIGNING_SECRET"] = self.signing_secret
        return env

    def client(self, namespace: str = "") -> HandlerClient:
        return HandlerClient(self.url, namespace=namespace)


class HandlerClient:
    """The handler app's control API, optionally confined to one namespace.

    With a namespace ``ns``, ``step_url("a")`` is ``…/steps/ns.a``, scripts are keyed by
    the short name ``a``, and ``requests()`` returns only ``ns.*`` records with ``name``
    shortened back to ``a`` (``full_name`` keeps the real one). Tests sharing one
    handler app therefore never see each other's requests.
    """

    def __init__(self, base_url: str, *, namespace: str = "", http: httpx.Client | None = None):
        self.base_url = base_url.rstrip("/")
        self.namespace = namespace
        self._owns_http = http is None
        self.http = http or httpx.Client(base_url=self.base_url, timeout=10.0, trust_env=False)

    def scoped(self, namespace: str | None = None) -> HandlerClient:
        """A view confined to ``namespace`` (a fresh random one by default)."""
        return HandlerClient(
            self.base_url, namespace=namespace or uuid.uuid4().hex[:10], http=self.http
        )

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> HandlerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Names and URLs.
    def name(self, short: str) -> str:
        return f"{self.namespace}.{short}" if self.namespace else short

    def step_url(self, short: str) -> str:
        return f"{self.base_url}/steps/{self.name(short)}"

    def hook_url(self, short: str) -> str:
        return f"{self.base_url}/hooks/{self.name(short)}"

    # Control API.
    def script(self, mapping: Mapping[str, Any] | None = None, /, **responses: Any) -> None:
        """Script the answers per short name: ``{name: [response, ...]}`` (see handler_app)."""
        merged = {**(mapping or {}), **responses}
        payload = {self.name(short): value for short, value in merged.items()}
        self.http.post("/_control/script", json=payload).raise_for_status()

    def reset(self) -> None:
        """Forget every script and record of every namespace."""
        self.http.post("/_control/reset").raise_for_status()

    def stats(self, kind: str | None = None) -> dict[str, Any]:
        """Counts over this namespace's records, cheap enough to poll under load.

        ``{"received", "answered", "inflight", "distinct", "receivedByOrigin",
        "inflightByOrigin"}``: ``distinct`` counts (workflow id, name) pairs; the
        ``…ByOrigin`` maps are keyed by the scheme and host of the request body's
        ``callbackUrl``, i.e. by the Baton server (its ``BATON_PUBLIC_URL``) that sent it.
        """
        params = {"prefix": f"{self.namespace}."} if self.namespace else {}
        if kind is not None:
            params["kind"] = kind
        response = self.http.get("/_control/stats", params=params)
        response.raise_for_status()
        return response.json()

    def requests(
        self,
        name: str | None = None,
        *,
        kind: str | None = None,
        workflow_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Recorded requests in arrival order; ``kind`` is ``steps`` or ``hooks``."""
        params = {"name": self.name(name)} if name else {}
        if self.namespace and not name:
            params["prefix"] = f"{self.namespace}."
        response = self.http.get("/_control/requests", params=params)
        response.raise_for_status()
        records = []
        for record in response.json()["items"]:
            record["full_name"] = record["name"]
            if self.namespace:
                record["name"] = record["name"].removeprefix(f"{self.namespace}.")
            if kind is not None and record["kind"] != kind:
                continue
            if workflow_id is not None and record["headers"].get("baton-workflow-id") != (
                workflow_id
            ):
                continue
            records.append(record)
        return records

    def wait_for(
        self,
        predicate: Callable[[list[dict[str, Any]]], Any],
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        *,
        name: str | None = None,
        kind: str | None = None,
        workflow_id: str | None = None,
        interval: float = POLL_INTERVAL,
    ) -> list[dict[str, Any]]:
        """Poll ``requests(...)`` until ``predicate(records)`` is true; return the records."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.requests(name, kind=kind, workflow_id=workflow_id)
            if predicate(records):
                return records
            if time.monotonic() >= deadline:
                summary = [(r["name"], r["headers"].get("baton-attempt")) for r in records]
                raise AssertionError(
                    f"handler condition not met within {timeout} s; records: {summary}"
                )
            time.sleep(interval)

    def wait_count(
        self, count: int, name: str | None = None, timeout: float = DEFAULT_WAIT_TIMEOUT, **kw: Any
    ) -> list[dict[str, Any]]:
        """Wait until at least ``count`` matching requests have been received and answered."""
        return self.wait_for(
            lambda records: (
                len(records) >= count and all(r["ended_mono"] is not None for r in records)
            ),
            timeout,
            name=name,
            **kw,
        )


class BatonClient:
    """``/v1`` over HTTP with the bearer key, plus polling helpers that assert."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.http = httpx.Client(
            base_url=self.base_url,
            headers=self.auth_headers,
            timeout=timeout,
            trust_env=False,
        )

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` set up like ``http``; use it with ``async with``."""
        kwargs.setdefault("timeout", self.timeout)
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self.auth_headers, trust_env=False, **kwargs
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> BatonClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create(self, body: Mapping[str, Any], *, expect: int = 201, **kwargs: Any) -> dict:
        """``POST /v1/workflows``; asserts the status code and returns the document."""
        response = self.http.post("/v1/workflows", json=body, **kwargs)
        _expect(response, expect)
        return response.json()

    def create_many(
        self, bodies: Sequence[Mapping[str, Any]], *, expect: int = 201, concurrency: int = 8
    ) -> list[dict]:
        """``create`` each body, ``concurrency`` at a time; the documents in body order."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(pool.map(lambda body: self.create(body, expect=expect), bodies))

    def get(self, workflow_id: str) -> dict:
        response = self.http.get(f"/v1/workflows/{workflow_id}")
        _expect(response, 200)
        return response.json()

    def step(self, workflow_id: str, step_id: str) -> dict:
        response = self.http.get(f"/v1/workflows/{workflow_id}/steps/{step_id}")
        _expect(response, 200)
        return response.json()

    def dependencies(self, workflow_id: str, step_id: str) -> dict:
        response = self.http.get(f"/v1/workflows/{workflow_id}/steps/{step_id}/dependencies")
        _expect(response, 200)
        return response.json()

    def events(self, workflow_id: str) -> list[dict]:
        """Every event of the workflow, page after page."""
        items: list[dict] = []
        params: dict[str, Any] = {}
        while True:
            response = self.http.get(f"/v1/workflows/{workflow_id}/events", params=params)
            _expect(response, 200)
            page = response.json()
            items.extend(page["items"])
            if page["nextAfter"] is None:
                return items
            params = {"after": page["nextAfter"]}

    def list_workflows(self, **params: Any) -> dict:
        response = self.http.get(
            "/v1/workflows", params={k: v for k, v in params.items() if v is not None}
        )
        _expect(response, 200)
        return response.json()

    def wait_status(
        self,
        workflow_id: str,
        statuses: str | Iterable[str],
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        *,
        stop_on: Iterable[str] = TERMINAL_STATUSES,
        interval: float = 0.1,
    ) -> dict:
        """Poll until the workflow's status is one of ``statuses``; return the document.

        Fails at once if it reaches a status in ``stop_on`` (terminal ones by default)
        that is not wanted, so a wrong outcome does not cost the whole timeout. Pass
        ``stop_on=()`` where a terminal-looking status can still move on.
        """
        wanted = {statuses} if isinstance(statuses, str) else set(statuses)
        stop = set(stop_on) - wanted
        deadline = time.monotonic() + timeout
        while True:
            document = self.get(workflow_id)
            if document["status"] in wanted:
                return document
            if document["status"] in stop:
                raise AssertionError(
                    f"workflow {workflow_id} ended {document['status']!r}, wanted "
                    f"{sorted(wanted)}: {document}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"workflow {workflow_id} still {document['status']!r} after {timeout} s, "
                    f"wanted {sorted(wanted)}: {document}"
                )
            time.sleep(interval)

    def wait_all(
        self,
        workflow_ids: Iterable[str],
        statuses: str | Iterable[str],
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        *,
        stop_on: Iterable[str] = TERMINAL_STATUSES,
        interval: float = 0.2,
    ) -> dict[str, dict]:
        """``wait_status`` for many workflows at once; ``{id: document}`` in the given order.

        Each round reads only the workflows not there yet. Fails at once when one reaches
        an unwanted status in ``stop_on``, and after ``timeout`` with a count and a sample.
        """
        ids = list(workflow_ids)
        wanted = {statuses} if isinstance(statuses, str) else set(statuses)
        stop = set(stop_on) - wanted
        done: dict[str, dict] = {}
        pending = ids
        deadline = time.monotonic() + timeout
        while True:
            waiting: list[tuple[str, dict]] = []
            for workflow_id in pending:
                document = self.get(workflow_id)
                if document["status"] in wanted:
                    done[workflow_id] = document
                elif document["status"] in stop:
                    raise AssertionError(
                        f"workflow {workflow_id} ended {document['status']!r}, wanted "
                        f"{sorted(wanted)}: {document}"
                    )
                else:
                    waiting.append((workflow_id, document))
            if not waiting:
                return {workflow_id: done[workflow_id] for workflow_id in ids}
            if time.monotonic() >= deadline:
                sample_id, sample = waiting[0]
                steps = {s["id"]: s["status"] for s in sample.get("steps", [])}
                raise AssertionError(
                    f"{len(waiting)} of {len(ids)} workflows not {sorted(wanted)} after "
                    f"{timeout} s; e.g. {sample_id} is {sample['status']!r} with steps {steps}"
                )
            pending = [workflow_id for workflow_id, _ in waiting]
            time.sleep(interval)

    def wait_events(
        self,
        workflow_id: str,
        predicate: Callable[[list[dict]], Any],
        timeout: float = DEFAULT_WAIT_TIMEOUT,
    ) -> list[dict]:
        """Poll the event list until ``predicate(events)`` is true; return the events."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events(workflow_id)
            if predicate(events):
                return events
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"events of {workflow_id} not as expected after {timeout} s: "
                    f"{[e['type'] for e in events]}"
                )
            time.sleep(0.1)


class BatonFactory:
    """Starts Baton servers under ``root``; ``close()`` stops them and drops their databases.

    Servers get SQLite in their own data dir, or a fresh PostgreSQL database each when
    ``BATON_E2E_POSTGRES_URL`` is set. Several servers share one database by passing the
    same ``database_url=`` (e.g. from ``database_url()``).
    """

    def __init__(self, root: Path, signing_secret: str | None = None):
        self.root = root
        self.signing_secret = signing_secret or random_signing_secret()
        self.servers: list[BatonServer] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> BatonFactory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.stop_all()
        finally:
            # Only after the servers are gone: a database is dropped with its connections.
            self._stack.close()

    def postgres_url(self, admin_url: str) -> str:
        """A fresh database on ``admin_url``'s PostgreSQL server, for servers to share.

        It is dropped by ``close()``, after the servers using it have stopped.
        """
        return self._stack.enter_context(postgres_database(admin_url))

    def database_url(self) -> str | None:
        """A fresh PostgreSQL database if configured; ``None`` means SQLite in the data dir."""
        admin_url = os.environ.get(POSTGRES_ENV)
        if not admin_url:
            return None
        return self._stack.enter_context(postgres_database(admin_url))

    def create(self, *, start: bool = True, **kwargs: Any) -> BatonServer:
        """A server on its own data dir (``data_dir=`` to share one, e.g. after a kill)."""
        data_dir = kwargs.pop("data_dir", None) or self.root / f"baton-{len(self.servers)}"
        kwargs.setdefault("signing_secret", self.signing_secret)
        if "database_url" not in kwargs:
            kwargs["database_url"] = self.database_url()
        server = BatonServer(data_dir, **kwargs)
        self.servers.append(server)
        if start:
            server.start()
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


def _expect(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        raise AssertionError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}, expected {status}: {response.text[:2000]}"
        )


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """Create a fresh database next to ``admin_url``'s, yield its URL, drop it after.

    ``admin_url`` is a ``postgres://user:pass@host:port/db`` URL whose user may create
    databases; the yielded URL differs only in the database name.
    """
    name = f"baton_e2e_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(admin_url)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    _run_sql(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield url
    finally:
        _run_sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run_sql(url: str, statement: str) -> None:
    import asyncpg  # only needed when PostgreSQL is used

    async def run() -> None:
        connection = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    # A thread of its own, so this works whether or not an event loop is running here.
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
