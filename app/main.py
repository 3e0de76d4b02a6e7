"""The ASGI application: ``app.main:app`` for uvicorn, ``create_app(settings)`` for tests."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from secrets import token_urlsafe
from types import FrameType
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from app import __version__
from app.api import (
    Api,
    BearerAuth,
    ExceptionHandler,
    http_exception_handler,
    problem_handler,
    server_error_handler,
)
from app.console import Console
from app.db import SqliteProcessLock, close_database, open_database
from app.delivery import Deliverer, step_callback_url
from app.dispatcher import Dispatcher
from app.errors import ConfigurationError, ProblemError
from app.keys import api_keys, signing_secrets
from app.logs import add_secrets, configure_logging, signing_secret_forms
from app.metrics import Metrics
from app.netguard import NetPolicy
from app.notify import PgWakeups
from app.settings import Settings
from app.store import Store
from app.sweeper import Sweeper
from app.tenants import NamespaceSigners
from app.tokens import CallbackTokens
from baton.signing import Signer

log = logging.getLogger("baton")

#: The cyclic collector's thresholds once the server runs (Python's are 700, 10, 10).
GC_THRESHOLDS = (20_000, 20, 50)

CALLBACK_TOKEN_SECRET = "callback-token"


class _Runtime:
    """What the lifespan starts and stops; routes reach the store through it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store()
        self.dispatcher: Dispatcher | None = None
        #: Set when the process is asked to stop (SIGTERM / SIGINT or lifespan end).
        self.stopping = asyncio.Event()

    def wake(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def begin_shutdown(self) -> None:
        """SIGTERM: claim nothing more, and end event streams so the server can stop."""
        self.stopping.set()
        if self.dispatcher is not None:
            self.dispatcher.stop_claiming()

    @property
    def inflight(self) -> int:
        return self.dispatcher.inflight if self.dispatcher is not None else 0


def create_app(
    settings: Settings | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> Starlette:
    """Build the Baton ASGI app; nothing touches the database until the lifespan starts.

    ``transport`` replaces the one deliveries go through (the SSRF-guarded aiohttp
    transport): tests pass an ``httpx.MockTransport`` so that nothing leaves the process.
    """
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    add_secrets(*settings.secret_values())
    runtime = _Runtime(settings)
    try:
        policy = NetPolicy.from_strings(settings.allow_private_networks, settings.allowed_hosts)
    except ValueError as exc:
        raise ConfigurationError(f"BATON_ALLOWED_HOSTS: {exc}") from exc
    keys = api_keys(settings.api_keys, settings.data_dir)
    secrets = signing_secrets(settings.signing_secrets, settings.data_dir)
    # Generated ones too, and in every form a log line could show them.
    add_secrets(*keys, *(form for s in secrets for form in signing_secret_forms(s)))
    api = Api(runtime.store, policy=policy, wake=runtime.wake, stopping=runtime.stopping)
    console = Console(runtime.store, env_keys=keys, settings=settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.allow_private_networks:
            log.warning(
                "BATON_ALLOW_PRIVATE_NETWORKS=true: step and callback URLs may reach "
                "loopback and private addresses (local development only)"
            )
        process_lock = SqliteProcessLock(settings.database_url)
        try:
            process_lock.acquire()
        except ConfigurationError as exc:
            log.error("%s", exc)
            raise
        try:
            await open_database(settings.database_url)
        except BaseException:
            process_lock.release()
            raise
        # Hidden from logs before it is first stored (the insert is logged at DEBUG).
        new_key = token_urlsafe(32)
        add_secrets(new_key)
        token_key = await runtime.store.server_secret(CALLBACK_TOKEN_SECRET, new_key)
        add_secrets(token_key)
        tokens = CallbackTokens(token_key)
        api.tokens = tokens

        signer = Signer(secrets)
        signers = NamespaceSigners(signer, runtime.store.namespace_signing_secrets)
        await console.start(token_key=token_key, signers=signers)
        deliverer = Deliverer(
            signer=signer,
            signers=signers,
            policy=policy,
            callback_url=functools.partial(step_callback_url, tokens, settings.public_url),
            max_connections=settings.max_concurrency,
            transport=transport,
        )
        metrics = Metrics(
            runtime.store.event_tally,
            inflight=lambda: runtime.inflight,
            schedule_ticks=runtime.store.schedule_tally,
        )
        api.metrics = metrics
        runtime.dispatcher = Dispatcher(
            runtime.store,
            deliverer,
            max_concurrency=settings.max_concurrency,
            lease_seconds=settings.lease_seconds,
            metrics=metrics,
        )
        api.dispatcher = runtime.dispatcher
        runtime.dispatcher.start()
        # Say this process is alive; on SQLite any lease left is a dead predecessor's
        # (only one process may serve the file): its requests are sent again now.
        await runtime.store.announce()
        if settings.is_sqlite:
            taken = await runtime.store.take_over_predecessors()
            if taken:
                log.warning("took back %d deliveries a stopped server left in flight", taken)
                runtime.wake()
        sweeper = Sweeper(
            runtime.store,
            wake=runtime.wake,
            retention_days=settings.retention_days,
            shared=not settings.is_sqlite,
        )
        sweeper.start()
        api.due_at = sweeper.due_at
        # Delayed starts and ticks that fell due while no server ran: at once.
        sweeper.due_at(datetime.now(UTC))
        wakeups = None if settings.is_sqlite else PgWakeups(settings.database_url, runtime.wake)
        if wakeups is not None:
            wakeups.start()
        restore_signals = _on_shutdown_signal(runtime.begin_shutdown)
        # Everything loaded so far (modules, models, compiled schemas) lives as long as
        # the process: keep the collector from walking it again on every full pass,
        # which would pause the event loop for milliseconds in the middle of a hop.
        # Most of what a request allocates is freed by reference counting; collecting
        # cycles less often saves 10-15 % of the CPU a step costs (bench/storeloop.py).
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        log.info(
            "Baton %s ready (owner %s); public URL %s (BATON_PUBLIC_URL: the base of "
            "async steps' callback URLs)",
            __version__,
            runtime.store.owner,
            settings.public_url,
        )
        try:
            yield
        finally:
            restore_signals()
            runtime.begin_shutdown()
            if wakeups is not None:
                await wakeups.stop()
            await sweeper.stop()
            await runtime.dispatcher.stop(grace=settings.shutdown_grace)
            await runtime.store.conditions.aclose()
            try:
                await runtime.store.retire()
            except Exception as exc:
                log.warning("could not remove this process's liveness row: %s", exc)
            await deliverer.aclose()
            await close_database()
            process_lock.release()

    handlers: dict[type[Exception] | int, ExceptionHandler] = {
        ProblemError: problem_handler,
        HTTPException: http_exception_handler,
        Exception: server_error_handler,
    }
    app = Starlette(
        routes=[*api.routes(), *console.routes()],
        middleware=[
            Middleware(
                BearerAuth,
                keys=keys,
                lookup=runtime.store.authenticate,
                session=console.sessions.namespace,
            )
        ],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app


def _on_shutdown_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback`` on SIGTERM/SIGINT before uvicorn's own handler; returns an undo.

    uvicorn waits for every open response before it shuts the app down, and an event
    stream would otherwise keep it waiting for as long as its workflow runs.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals belong to the main thread (not so under test clients)
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        chained = previous.get(signum)
        if callable(chained):
            chained(signum, frame)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, original in previous.items():
            signal.signal(sig, original)

    return restore


def __getattr__(name: str) -> Starlette:
    # `uvicorn app.main:app` builds the app from the environment on first access, so
    # importing this module (tests, tools) never reads settings or writes key files.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
