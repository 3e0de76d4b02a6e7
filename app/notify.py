"""Prompt wake-ups across processes on PostgreSQL: LISTEN/NOTIFY.

A transaction that makes deliveries due sends ``NOTIFY baton_due`` (delivered
when it commits); every process listens on its own connection and wakes its
dispatcher. It is an optimisation only: the dispatcher still polls the
database, so a lost notification (or a listener reconnecting) costs at most
one poll interval, never a delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

log = logging.getLogger("baton.notify")

CHANNEL = "baton_due"
#: How long to wait before listening again after the connection dropped.
RECONNECT_SECONDS = 1.0


class PgWakeups:
    """Listens for ``baton_due`` and calls ``on_wake`` for every notification."""

    def __init__(self, dsn: str, on_wake: Callable[[], None]) -> None:
        self.dsn = "postgresql://" + dsn.split("://", 1)[1]
        self.on_wake = on_wake
        self._task: asyncio.Task[None] | None = None
        self._connection: Any = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="baton-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    def _notified(self, *args: Any) -> None:
        self.on_wake()

    async def _listen(self) -> None:
        while True:
            try:
                closed = asyncio.Event()
                self._connection = await asyncpg.connect(self.dsn)
                self._connection.add_termination_listener(_setter(closed))
                await self._connection.add_listener(CHANNEL, self._notified)
                # Anything committed while we were not listening: look once now.
                self.on_wake()
                await closed.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening for %s failed (%s); retrying", CHANNEL, exc)
            finally:
                if self._connection is not None:
                    with contextlib.suppress(Exception):
                        await self._connection.close()
                    self._connection = None
            await asyncio.sleep(RECONNECT_SECONDS)


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _connection: event.set()
