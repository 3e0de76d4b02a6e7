"""A TCP proxy for the Python client's end-to-end tests that breaks event streams.

``DroppingProxy`` forwards loopback connections to a Baton server. The first
connection that asks for ``text/event-stream`` is cut after ``events`` complete SSE
messages have passed (mid-stream, as a dropped network would), so the client has to
reconnect; every other connection is passed through untouched. ``requests`` keeps the
head of every request it forwarded, to check what the client sent when it came back.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from harness import free_port

_CHUNK = 65536


class DroppingProxy:
    def __init__(self, upstream_port: int, events: int = 2) -> None:
        self.upstream_port = upstream_port
        self.events = events
        self.port = free_port()
        self.requests: list[bytes] = []
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._threads: list[threading.Thread] = []
        self._closing = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> DroppingProxy:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing = True
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            streaming = threading.Event()
            self._spawn(self._to_upstream, client, upstream, streaming)
            self._spawn(self._to_client, upstream, client, streaming)

    def _to_upstream(
        self, client: socket.socket, upstream: socket.socket, streaming: threading.Event
    ) -> None:
        for data in _chunks(client):
            with self._lock:
                self.requests.append(data)
            if b"text/event-stream" in data.lower():
                streaming.set()
            upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def _to_client(
        self, upstream: socket.socket, client: socket.socket, streaming: threading.Event
    ) -> None:
        seen = 0
        for data in _chunks(upstream):
            if streaming.is_set() and not self.cut.is_set():
                ends = _message_ends(data)
                if seen + len(ends) >= self.events:
                    # Send exactly `events` whole messages, then drop the connection.
                    client.sendall(data[: ends[self.events - seen - 1]])
                    self.cut.set()
                    _close(client, upstream)
                    return
                seen += len(ends)
            try:
                client.sendall(data)
            except OSError:
                break
        _close(client, upstream)


def _chunks(sock: socket.socket) -> Iterator[bytes]:
    while True:
        try:
            data = sock.recv(_CHUNK)
        except OSError:
            return
        if not data:
            return
        yield data


def _message_ends(data: bytes) -> list[int]:
    """Offsets just after each blank line ending an SSE message in ``data``."""
    ends, start = [], 0
    while (found := data.find(b"\n\n", start)) != -1:
        ends.append(found + 2)
        start = found + 2
    return ends


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
