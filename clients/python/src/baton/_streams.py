"""What following a workflow's event stream and waiting for its end share (sync and async).

Following: ``GET /v1/workflows/{id}/events`` with ``Accept: text/event-stream``; each
message's ``data`` is an event. When the connection drops, the stream is opened again
with ``Last-Event-ID`` set to the last event received, so no event is lost or repeated.
When the server ends the stream, the workflow is checked: a finished one ends the
iteration, anything else (a proxy that closed an idle connection) reconnects.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import httpx
from httpx_sse import ServerSentEvent

from baton.documents import TERMINAL_STATUSES, Event
from baton.errors import APIConnectionError, InvalidResponse

#: Reconnections in a row without an event before following gives up.
MAX_RECONNECTS = 5
#: The read timeout of a stream: longer than the server's 15 s keep-alive.
STREAM_READ_TIMEOUT = 45.0
#: First and longest pause of :func:`poll_interval` (``wait()``).
FIRST_POLL = 0.1
POLL_GROWTH = 1.5


def stream_timeout(timeout: httpx.Timeout) -> httpx.Timeout:
    read = None if timeout.read is None else max(timeout.read, STREAM_READ_TIMEOUT)
    return httpx.Timeout(connect=timeout.connect, read=read, write=timeout.write, pool=None)


def decode_event(message: ServerSentEvent) -> Event | None:
    """The event a message carries; None for a message without data."""
    if not message.data:
        return None
    try:
        return Event.wrap(json.loads(message.data))
    except (ValueError, TypeError) as exc:
        raise InvalidResponse(f"an event stream message is not a JSON object: {exc}") from exc


@dataclass
class Follow:
    """The state of one ``events(follow=True)``: where to resume, and failures in a row."""

    workflow_id: str
    last_event_id: str | None = None
    failures: int = 0
    last_error: BaseException | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        return {} if self.last_event_id is None else {"Last-Event-ID": self.last_event_id}

    def received(self, event: Event) -> None:
        self.last_event_id = str(event["id"])
        self.failures = 0

    def dropped(self, error: BaseException | None) -> float:
        """Seconds to wait before reconnecting after the stream ended or broke.

        Raises:
            APIConnectionError: too many reconnections in a row brought no event.
        """
        self.failures += 1
        self.last_error = error or self.last_error
        if self.failures > MAX_RECONNECTS:
            raise APIConnectionError(
                f"the event stream of workflow {self.workflow_id!r} keeps dropping "
                f"({MAX_RECONNECTS} reconnections without an event): {self.last_error}"
            ) from self.last_error
        return random.uniform(0.5, 1.0) * min(8.0, 0.25 * 2**self.failures)


def finished(status: object) -> bool:
    return status in TERMINAL_STATUSES


def poll_interval(previous: float | None, ceiling: float) -> float:
    """The next pause of ``wait()``: from 0.1 s, growing by half, at most ``ceiling``."""
    return min(ceiling, FIRST_POLL if previous is None else previous * POLL_GROWTH)
