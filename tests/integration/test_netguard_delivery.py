"""The SSRF guard at delivery: real httpx + aiohttp requests to a server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from app.netguard import (
    PRIVATE_NETWORKS_HINT,
    GuardedTransport,
    MalformedAnswer,
    NetPolicy,
    UnsafeAddressError,
    make_transport,
)

STRICT = NetPolicy()
OPEN = NetPolicy(allow_private=True)


class TinyServer:
    """A keep-alive HTTP/1.1 server that answers every path with 200 ``ok``, except:

    ``/redirect`` answers 302, ``/hang-up`` closes the connection without an
    answer, ``/truncated`` closes it halfway through the body.
    """

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self.requests: list[tuple[str, str, bytes]] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def _response(self, target: str) -> bytes:
        if target == "/hang-up":
            return b""
        if target == "/truncated":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nok"
        if target == "/redirect":
            location = f"http://127.0.0.1:{self.port}/elsewhere"
            return (
                f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = dict(
                    (name.strip().lower(), value.strip())
                    for name, value in (line.split(":", 1) for line in lines[1:] if line)
                )
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((method, target, body))
                response = self._response(target)
                if not response:
                    break
                writer.write(response)
                await writer.drain()
                if target == "/truncated":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class FakeResolver(AbstractResolver):
    """A DNS server under the attacker's control: names map to whatever it likes."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(errno.ENOENT, f"no such host {host}")
        return [
            ResolveResult(
                hostname=host,
                host=ip,
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in self.answers[host]
        ]

    async def close(self) -> None:
        pass


@pytest.fixture
async def server() -> AsyncIterator[TinyServer]:
    tiny = TinyServer()
    await tiny.start()
    yield tiny
    await tiny.stop()


def client(transport: httpx.AsyncBaseTransport, **kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, timeout=5.0, **kwargs)  # type: ignore[arg-type]


async def test_localhost_is_refused_before_connecting(server: TinyServer) -> None:
    async with client(make_transport(STRICT, limit=4)) as http:
        with pytest.raises(httpx.ConnectError) as info:
            await http.post(f"http://localhost:{server.port}/hook", json={"a": 1})
    assert "host localhost is a loopback name" in str(info.value)
    assert PRIVATE_NETWORKS_HINT in str(info.value)
    assert server.connections == 0


@pytest.mark.parametrize(
    ("host", "fragment"),
    [
        ("127.0.0.1", "host 127.0.0.1 is a loopback address"),
        ("[::ffff:127.0.0.1]", "IPv4-mapped address of 127.0.0.1"),
        ("0x7f.1", "host 0x7f.1 is 127.0.0.1"),
        ("127.1", "host 127.1 is 127.0.0.1"),
        ("2130706433", "host 2130706433 is 127.0.0.1"),
    ],
)
async def test_ip_literals_are_refused_at_delivery(
    server: TinyServer, host: str, fragment: str
) -> None:
    # aiohttp dials IP literals without asking the resolver: the transport's
    # static check is what stops these.
    async with client(make_transport(STRICT, limit=4)) as http:
        with pytest.raises(httpx.ConnectError, match="private networks are not allowed") as info:
            await http.get(f"http://{host}:{server.port}/")
    assert fragment in str(info.value)
    assert server.connections == 0


async def test_dns_rebinding_to_loopback_is_refused(server: TinyServer) -> None:
    inner = FakeResolver({"rebind.example": ["127.0.0.1"]})
    transport = GuardedTransport(STRICT, limit=4, inner_resolver=inner)
    async with client(transport) as http:
        with pytest.raises(httpx.ConnectError) as info:
            await http.post(f"http://rebind.example:{server.port}/hook", json={})
    message = str(info.value)
    assert "host rebind.example resolves to 127.0.0.1, a loopback address" in message
    assert message.endswith(f"; {PRIVATE_NETWORKS_HINT}]")
    # The chain the delivery layer can inspect: httpx <- aiohttp <- the guard.
    cause = info.value.__cause__
    assert isinstance(cause, aiohttp.ClientConnectorDNSError)
    assert isinstance(cause.os_error, UnsafeAddressError)
    assert inner.asked == ["rebind.example"]
    assert server.connections == 0


async def test_one_refused_address_among_several_is_enough(server: TinyServer) -> None:
    inner = FakeResolver({"mixed.example": ["93.184.215.14", "127.0.0.1"]})
    async with client(GuardedTransport(STRICT, limit=4, inner_resolver=inner)) as http:
        with pytest.raises(httpx.ConnectError, match=r"resolves to 127\.0\.0\.1"):
            await http.get(f"http://mixed.example:{server.port}/")
    assert server.connections == 0


async def test_allowed_host_connects_to_the_address_that_was_checked(server: TinyServer) -> None:
    # rebind.example exists only in the fake resolver: a 200 proves the
    # connection went to the address the guard saw, with no second lookup.
    inner = FakeResolver({"rebind.example": ["127.0.0.1"]})
    policy = NetPolicy.from_strings(False, ["rebind.example"])
    async with client(GuardedTransport(policy, limit=4, inner_resolver=inner)) as http:
        response = await http.post(f"http://rebind.example:{server.port}/hook", json={"x": 1})
    assert response.status_code == 200
    assert response.text == "ok"
    assert server.requests == [("POST", "/hook", b'{"x":1}')]
    assert inner.asked == ["rebind.example"]


async def test_allowed_network_admits_resolved_addresses(server: TinyServer) -> None:
    inner = FakeResolver({"hooks.internal": ["127.0.0.1"]})
    policy = NetPolicy.from_strings(False, ["127.0.0.0/8"])
    async with client(GuardedTransport(policy, limit=4, inner_resolver=inner)) as http:
        response = await http.get(f"http://hooks.internal:{server.port}/")
    assert response.status_code == 200


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_allow_private_reaches_loopback(server: TinyServer, host: str) -> None:
    async with client(make_transport(OPEN, limit=4)) as http:
        response = await http.post(f"http://{host}:{server.port}/hook", json={"ok": True})
    assert response.status_code == 200
    assert server.requests == [("POST", "/hook", b'{"ok":true}')]


@pytest.mark.parametrize("allowed", ["localhost", "127.0.0.1"])
async def test_allowed_hosts_reach_loopback(server: TinyServer, allowed: str) -> None:
    policy = NetPolicy.from_strings(False, [allowed])
    async with client(make_transport(policy, limit=4)) as http:
        response = await http.get(f"http://{allowed}:{server.port}/")
    assert response.status_code == 200


async def test_userinfo_is_refused_at_delivery_even_when_private_is_allowed(
    server: TinyServer,
) -> None:
    async with client(make_transport(OPEN, limit=4)) as http:
        with pytest.raises(httpx.ConnectError, match="user name or password"):
            await http.get(f"http://user:pw@127.0.0.1:{server.port}/")
    assert server.connections == 0


async def test_redirects_are_returned_not_followed(server: TinyServer) -> None:
    async with client(make_transport(OPEN, limit=4)) as http:
        response = await http.post(f"http://127.0.0.1:{server.port}/redirect", json={})
    assert response.status_code == 302
    assert response.headers["location"] == f"http://127.0.0.1:{server.port}/elsewhere"
    assert [target for _, target, _ in server.requests] == ["/redirect"]


async def test_a_followed_redirect_is_checked_like_any_request(server: TinyServer) -> None:
    # Should a client ever follow redirects, each hop still goes through the
    # transport's check: here the second hop, to 127.0.0.1, is refused.
    inner = FakeResolver({"hooks.example": ["127.0.0.1"]})
    policy = NetPolicy.from_strings(False, ["hooks.example"])
    transport = GuardedTransport(policy, limit=4, inner_resolver=inner)
    async with client(transport, follow_redirects=True) as http:
        with pytest.raises(httpx.ConnectError, match=r"host 127\.0\.0\.1 is a loopback address"):
            await http.get(f"http://hooks.example:{server.port}/redirect")
    assert [target for _, target, _ in server.requests] == ["/redirect"]


async def test_connections_are_kept_alive_and_reused(server: TinyServer) -> None:
    async with client(make_transport(OPEN, limit=4)) as http:
        for _ in range(3):
            response = await http.post(f"http://127.0.0.1:{server.port}/hook", json={})
            assert response.status_code == 200
    assert len(server.requests) == 3
    assert server.connections == 1


async def test_timeout_connect_caps_the_clients_connect_timeout(server: TinyServer) -> None:
    async with client(make_transport(OPEN, limit=4, timeout_connect=1.5)) as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/")
        assert response.request.extensions["timeout"]["connect"] == 1.5
        response = await http.get(
            f"http://127.0.0.1:{server.port}/", timeout=httpx.Timeout(5.0, connect=0.5)
        )
        assert response.request.extensions["timeout"]["connect"] == 0.5


async def test_proxies_from_the_environment_are_ignored(
    server: TinyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy would resolve and connect on Baton's behalf, past the guard.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9/")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9/")
    async with client(make_transport(OPEN, limit=4)) as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/")
    assert response.status_code == 200


async def test_a_refused_connection_is_a_connect_error_not_a_timeout() -> None:
    # httpx-aiohttp on its own reports this as httpx.ConnectTimeout.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with client(make_transport(OPEN, limit=4)) as http:
        with pytest.raises(httpx.ConnectError) as info:
            await http.get(f"http://127.0.0.1:{port}/")
    assert not isinstance(info.value, httpx.TimeoutException)


async def test_a_refused_address_is_a_connect_error_not_a_timeout(server: TinyServer) -> None:
    inner = FakeResolver({"rebind.example": ["10.0.0.1"]})
    async with client(GuardedTransport(STRICT, limit=4, inner_resolver=inner)) as http:
        with pytest.raises(httpx.ConnectError) as info:
            await http.get(f"http://rebind.example:{server.port}/")
    assert not isinstance(info.value, httpx.TimeoutException)


async def test_a_server_hanging_up_is_not_a_timeout(server: TinyServer) -> None:
    async with client(make_transport(OPEN, limit=4)) as http:
        with pytest.raises(httpx.TransportError) as info:
            await http.post(f"http://127.0.0.1:{server.port}/hang-up", json={})
    assert isinstance(info.value, httpx.RemoteProtocolError)
    assert "Server disconnected" in str(info.value)


async def test_a_truncated_body_is_a_malformed_answer(server: TinyServer) -> None:
    # httpx's own transport calls a body cut short a protocol error too.
    async with client(make_transport(OPEN, limit=4)) as http:
        with pytest.raises(MalformedAnswer, match="Not enough data"):
            await http.get(f"http://127.0.0.1:{server.port}/truncated")


async def test_a_body_read_in_part_is_released_cleanly(server: TinyServer) -> None:
    # Delivery stops reading at its size cap; the stream must still close.
    async with client(make_transport(OPEN, limit=1)) as http:
        for _ in range(2):
            async with http.stream("POST", f"http://127.0.0.1:{server.port}/hook") as response:
                async for chunk in response.aiter_bytes():
                    assert chunk
                    break
    assert len(server.requests) == 2
