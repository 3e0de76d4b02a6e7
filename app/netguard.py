"""The SSRF guard: which URLs Baton may send requests to.

Baton POSTs to URLs its users supply, so without a guard anyone who can
create a workflow can make the server reach addresses only it can reach:
loopback services, the private network, the cloud metadata endpoint. The
guard refuses every address that is not globally routable unless the
operator allows private networks (``BATON_ALLOW_PRIVATE_NETWORKS``) or lists
the host in ``NetPolicy.allowed_hosts``.

It runs twice:

* at creation, :func:`check_url` looks at the URL alone (no DNS): scheme,
  user info, and a host that is an IP literal in any spelling or a
  ``localhost`` name;
* at delivery, the transport from :func:`make_transport` applies the same
  static check to every request (aiohttp connects to IP literals without
  asking the resolver) and resolves host names through
  :class:`GuardedResolver`, which checks every address and hands exactly
  those addresses to the connector, so a second DNS answer (rebinding)
  cannot slip in between the check and the connection.

Errors::

    ValueError
    └── UnsafeURL            -- the URL or address is refused; the message says why
    OSError
    └── UnsafeAddressError   -- raised by GuardedResolver; aiohttp wraps it in
                                ClientConnectorDNSError, and the transport from
                                make_transport raises that as httpx.ConnectError
    httpx.RemoteProtocolError
    └── MalformedAnswer      -- the target's answer is not valid HTTP (the
                                transport from make_transport raises it for
                                aiohttp's parser errors)

Numeric hosts are read the way browsers read them (WHATWG URL host parsing,
a superset of what ``inet_aton`` accepts), so ``http://0x7f.1/``,
``http://2130706433/`` and ``http://127.1/`` are all 127.0.0.1.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import unquote

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from httpx_aiohttp import AiohttpTransport

__all__ = [
    "GuardedResolver",
    "GuardedTransport",
    "NetPolicy",
    "UnsafeAddressError",
    "UnsafeURL",
    "check_address",
    "check_url",
    "check_url_for_delivery",
    "make_transport",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})
PRIVATE_NETWORKS_HINT = (
    "private networks are not allowed (set BATON_ALLOW_PRIVATE_NETWORKS=true to allow)"
)

#: Names that always mean this machine (RFC 6761 reserves ``localhost`` and
#: every name under it; the others are common /etc/hosts aliases).
LOCALHOST_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

# Ranges refused with a named reason, first match wins (so the metadata
# address is named before the link-local range holding it). Whatever these
# miss is still refused when ``ipaddress`` says it is not global.
_V4_REFUSED: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), reason)
    for net, reason in (
        ("0.0.0.0/32", "an unspecified address"),
        ("0.0.0.0/8", "a 'this network' address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a shared address space (CGNAT) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.169.254/32", "the cloud metadata address (link-local)"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol assignment address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.88.99.0/24", "a deprecated 6to4 relay address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "a broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
    )
)

_V6_REFUSED: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), reason)
    for net, reason in (
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("::/96", "an IPv4-compatible address (deprecated)"),
        ("::ffff:0:0:0/96", "an IPv4-translated address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("100::/64", "a discard-only address"),
        ("2001::/32", "a Teredo address"),
        ("2001:db8::/32", "a documentation address"),
        ("3fff::/20", "a documentation address"),
        ("fc00::/7", "a unique-local address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address (deprecated)"),
        ("ff00::/8", "a multicast address"),
    )
)

# The NAT64 well-known prefix carries an IPv4 address in its last 32 bits; on
# an IPv6-only network with DNS64 it is how public IPv4 hosts are reached, so
# it is judged by the address it carries.
_NAT64_PREFIX = IPv6Network("64:ff9b::/96")

_DIGITS = {
    8: frozenset("01234567"),
    10: frozenset("0123456789"),
    16: frozenset("0123456789abcdefABCDEF"),
}


class UnsafeURL(ValueError):
    """A URL or address the SSRF guard refuses; the message says why."""


class UnsafeAddressError(OSError):
    """A resolved address the SSRF guard refuses, raised from the resolver.

    An ``OSError`` so aiohttp treats it as a failed lookup and raises
    ``ClientConnectorDNSError``, which the transport from :func:`make_transport`
    raises as ``httpx.ConnectError``. aiohttp builds that error's message from
    ``strerror``, so the refusal is put there to reach the attempt log.
    """

    def __init__(self, unsafe: UnsafeURL) -> None:
        super().__init__(errno.EACCES, str(unsafe))
        self.unsafe = unsafe

    def __str__(self) -> str:
        return str(self.unsafe)


@dataclass(frozen=True)
class NetPolicy:
    """Where outgoing requests may go.

    ``allowed_hosts`` holds host names, IP literals and CIDR networks that are
    allowed even though they are private. A host name entry allows every
    address that name resolves to; an address or network entry allows those
    addresses whatever name led to them. Entries are normalised (lower case,
    no trailing dot, networks in canonical form); an entry that is none of
    these raises ``ValueError``.
    """

    allow_private: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    _names: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in self.allowed_hosts:
            parsed = _parse_allowed_entry(entry)
            if isinstance(parsed, str):
                names.add(parsed)
            else:
                networks.append(parsed)
        canonical = frozenset(names) | frozenset(str(net) for net in networks)
        # Frozen: the normalised values are set once, here.
        object.__setattr__(self, "allowed_hosts", canonical)
        object.__setattr__(self, "_names", frozenset(names))
        object.__setattr__(self, "_networks", tuple(networks))

    @classmethod
    def from_strings(cls, allow_private: bool, allowed_hosts: Iterable[str]) -> NetPolicy:
        """Build a policy from settings values; blank entries are skipped."""
        entries = frozenset(entry.strip() for entry in allowed_hosts if entry.strip())
        return cls(allow_private=allow_private, allowed_hosts=entries)

    def allows_name(self, host: str) -> bool:
        """Whether ``host`` (any case, trailing dot or not) is an allowed host name."""
        return _normalise_name(host) in self._names

    def allows_address(self, address: IPAddress) -> bool:
        """Whether ``address`` lies in an allowed address or network entry."""
        plain = _without_scope(address)
        if isinstance(plain, IPv6Address) and plain.ipv4_mapped is not None:
            # ::ffff:127.0.0.1 is 127.0.0.1 on the wire; allowing one allows both.
            plain = plain.ipv4_mapped
        return any(plain in net for net in self._networks)


def check_url(url: str, policy: NetPolicy) -> None:
    """Refuse ``url`` at creation time unless Baton may send requests to it.

    Raises :class:`UnsafeURL` for a scheme other than http or https, a missing
    host, user info (``user:pass@``), a host that is not a valid host name,
    and a host that is an IP literal in any spelling or a ``localhost`` name
    the policy refuses. Host names that need DNS pass: their addresses are
    checked at delivery, by :class:`GuardedResolver`.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UnsafeURL(f"invalid URL: {exc}") from exc
    _check_parsed_url(parsed, policy)


def check_url_for_delivery(url: str | httpx.URL, policy: NetPolicy) -> None:
    """Refuse ``url`` just before it is sent: the static half of the delivery check.

    aiohttp connects to an IP-literal host without calling the resolver, so
    :class:`GuardedResolver` never sees ``http://127.0.0.1/``; this check
    covers it. The transport from :func:`make_transport` runs it on every
    request; calling it first gives the caller an :class:`UnsafeURL` instead
    of a connection error. It also applies the policy in force now, which may
    differ from the one the URL was created under.
    """
    if isinstance(url, httpx.URL):
        _check_parsed_url(url, policy)
    else:
        check_url(url, policy)


def check_address(
    ip: str | IPv4Address | IPv6Address, policy: NetPolicy, host: str | None = None
) -> None:
    """Refuse ``ip`` unless it is globally routable or the policy allows it.

    ``host`` is the name that resolved to ``ip``, if any: it names the host in
    the message and is matched against the policy's allowed host names.
    """
    if isinstance(ip, IPv4Address | IPv6Address):
        address: IPAddress = ip
    else:
        try:
            address = ipaddress.ip_address(ip.strip().removeprefix("[").removesuffix("]"))
        except ValueError as exc:
            raise UnsafeURL(f"{ip!r} is not an IP address") from exc
    if host is not None and policy.allows_name(host):
        return
    resolved = host is not None and _normalise_name(host) != str(address)
    _check_ip(address, policy, host if host is not None else str(address), resolved=resolved)


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses host names resolving to refused addresses.

    Resolves with ``inner`` (aiohttp's default resolver unless given), checks
    every address, and raises :class:`UnsafeAddressError` if any one is
    refused. The addresses it returns are the ones the connector dials, so
    the check and the connection see the same DNS answer.
    """

    def __init__(self, policy: NetPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        # aiohttp's ThreadedResolver grabs the running loop when built, so the
        # default one is made on first use, inside the loop.
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` and return its addresses, all of them checked."""
        if self._inner is None:
            self._inner = DefaultResolver()
        if self._policy.allow_private or self._policy.allows_name(host):
            return await self._inner.resolve(host, port, family)
        try:
            # A host name can itself be a disguised literal (``0x7f.1`` reaches
            # the resolver, and getaddrinfo would read it as 127.0.0.1).
            _check_host(host, self._policy)
        except UnsafeURL as exc:
            raise UnsafeAddressError(exc) from exc
        results = await self._inner.resolve(host, port, family)
        for result in results:
            try:
                check_address(result["host"], self._policy, host)
            except UnsafeURL as exc:
                raise UnsafeAddressError(exc) from exc
        return results

    async def close(self) -> None:
        """Release the inner resolver."""
        if self._inner is not None:
            await self._inner.close()


class GuardedTransport(AiohttpTransport):
    """httpx-aiohttp's transport with the SSRF guard in front of every request.

    Built by :func:`make_transport`; see there. ``inner_resolver`` replaces
    aiohttp's default resolver under the guard (tests use it to fake DNS).
    """

    def __init__(
        self,
        policy: NetPolicy,
        *,
        limit: int,
        timeout_connect: float | None = None,
        inner_resolver: AbstractResolver | None = None,
    ) -> None:
        self.policy = policy
        self._limit = limit
        self._timeout_connect = timeout_connect
        self._inner_resolver = inner_resolver
        self._resolver: AbstractResolver | None = None
        # A callable client: httpx-aiohttp calls it on the first request, so
        # the session and connector are made inside the running loop.
        super().__init__(client=self._make_session)

    def _make_session(self) -> aiohttp.ClientSession:
        if self.policy.allow_private:
            # Every address is allowed: no point checking what DNS says.
            self._resolver = self._inner_resolver
        else:
            self._resolver = GuardedResolver(self.policy, self._inner_resolver)
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            ssl=self.ssl_context,
            resolver=self._resolver,
        )
        # trust_env=False: a proxy from the environment would resolve and
        # connect on Baton's behalf, out of the guard's reach.
        return aiohttp.ClientSession(connector=connector, trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Check the request's URL, then send it without following redirects."""
        try:
            check_url_for_delivery(request.url, self.policy)
        except UnsafeURL as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        if self._timeout_connect is not None:
            timeouts = dict(request.extensions.get("timeout", {}))
            current = timeouts.get("connect")
            timeouts["connect"] = (
                self._timeout_connect if current is None else min(current, self._timeout_connect)
            )
            request.extensions["timeout"] = timeouts
        with _fix_error_types(request):
            response = await super().handle_async_request(request)
        if isinstance(response.stream, httpx.AsyncByteStream):
            response.stream = _FixedErrorStream(response.stream, request)
        return response

    async def aclose(self) -> None:
        """Close the session, its connector and the resolver."""
        await super().aclose()
        if self._resolver is not None:
            await self._resolver.close()


class MalformedAnswer(httpx.RemoteProtocolError):
    """The target answered, but not with valid HTTP: a bad status line, headers over
    aiohttp's limit, a bad or unfulfilled Content-Length, broken chunks."""


def _one_line(message: str, limit: int = 300) -> str:
    """aiohttp's parser errors span lines (the offending bytes and a caret): one line."""
    return " ".join(message.split())[:limit]


@contextmanager
def _fix_error_types(request: httpx.Request) -> Iterator[None]:
    """Undo httpx-aiohttp's mapping of every aiohttp connection error to ``ConnectTimeout``,
    and raise an answer aiohttp could not parse as ``MalformedAnswer``.

    httpx-aiohttp 0.2 maps ``aiohttp.ClientConnectionError`` to
    ``httpx.ConnectTimeout`` and never narrows it, so a refused connection, a
    failed or refused DNS lookup, or a server hanging up would read as a
    timeout. Errors whose aiohttp cause is not a timeout get the type httpx's
    own transport would give them.
    """
    try:
        yield
    except aiohttp.ClientResponseError as exc:
        # aiohttp could not parse the answer (status line, headers, Content-Length,
        # chunks): httpx's own transport calls that a protocol error too.
        raise MalformedAnswer(_one_line(exc.message), request=request) from exc
    except aiohttp.ClientPayloadError as exc:
        raise MalformedAnswer(_one_line(str(exc)), request=request) from exc
    except httpx.ReadError as exc:
        # httpx-aiohttp maps a body that ends before its Content-Length, or broken
        # chunks, to a read error: the answer itself was malformed.
        if isinstance(exc.__cause__, aiohttp.ClientPayloadError):
            raise MalformedAnswer(_one_line(str(exc.__cause__)), request=request) from exc
        raise
    except httpx.ConnectTimeout as exc:
        cause = exc.__cause__
        if not isinstance(cause, aiohttp.ClientConnectionError) or isinstance(cause, TimeoutError):
            raise
        fixed: httpx.TransportError
        if isinstance(cause, aiohttp.ClientConnectorError):
            fixed = httpx.ConnectError(str(exc), request=request)
        elif isinstance(cause, aiohttp.ClientPayloadError):
            fixed = MalformedAnswer(_one_line(str(cause)), request=request)
        elif isinstance(cause, aiohttp.ServerDisconnectedError):
            fixed = httpx.RemoteProtocolError(str(exc), request=request)
        else:
            fixed = httpx.ReadError(str(exc), request=request)
        raise fixed from cause


class _FixedErrorStream(httpx.AsyncByteStream):
    """A response body whose read errors get the right httpx type (see ``_fix_error_types``)."""

    def __init__(self, stream: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _fix_error_types(self._request):
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        with _fix_error_types(self._request):
            await self._stream.aclose()


def make_transport(
    policy: NetPolicy, *, limit: int, timeout_connect: float | None = None
) -> httpx.AsyncBaseTransport:
    """Build the httpx transport deliveries go through, backed by aiohttp.

    One pooled ``aiohttp.ClientSession`` (keep-alive, at most ``limit``
    connections) made lazily on the first request, with a
    :class:`GuardedResolver` when the policy refuses anything. Every request's
    URL goes through :func:`check_url_for_delivery` first; a refusal, there or
    in the resolver, surfaces as ``httpx.ConnectError`` naming the reason.
    Connection failures are ``httpx.ConnectError`` and only timeouts are
    ``httpx.TimeoutException``, as with httpx's own transport.
    Redirects are never followed here (httpx-aiohttp passes
    ``allow_redirects=False``); keep the client's ``follow_redirects=False``.
    ``timeout_connect`` caps the time to open one connection, on top of the
    client's own connect timeout.
    """
    return GuardedTransport(policy, limit=limit, timeout_connect=timeout_connect)


def _check_parsed_url(url: httpx.URL, policy: NetPolicy) -> None:
    if not url.scheme:
        raise UnsafeURL("URL has no scheme; it must start with http:// or https://")
    if url.scheme not in ALLOWED_SCHEMES:
        raise UnsafeURL(f"URL scheme must be http or https, not {url.scheme!r}")
    if url.userinfo:
        raise UnsafeURL("URL must not contain a user name or password")
    if not url.raw_host:
        raise UnsafeURL("URL has no host")
    if url.port is not None and not 0 < url.port < 65536:
        raise UnsafeURL(f"URL port {url.port} is out of range")
    _check_host(url.raw_host.decode("ascii"), policy)


def _check_host(host: str, policy: NetPolicy) -> None:
    """Refuse a host that is, in any spelling, an address or name the policy refuses."""
    parsed = _parse_host(host)
    if policy.allow_private:
        return
    if isinstance(parsed, str):
        if _is_localhost_name(parsed) and not policy.allows_name(parsed):
            raise UnsafeURL(f"host {host} is a loopback name; {PRIVATE_NETWORKS_HINT}")
        return
    _check_ip(parsed, policy, host, resolved=False)


def _check_ip(address: IPAddress, policy: NetPolicy, host: str, *, resolved: bool) -> None:
    if policy.allow_private or policy.allows_address(address):
        return
    reason = _refusal_reason(address)
    if reason is None:
        return
    if resolved:
        subject = f"host {host} resolves to {address}, {reason}"
    elif isinstance(address, IPv4Address) and host != str(address):
        # Spell out what an odd spelling means: ``0x7f.1`` is 127.0.0.1.
        subject = f"host {host} is {address}, {reason}"
    else:
        subject = f"host {host} is {reason}"
    raise UnsafeURL(f"{subject}; {PRIVATE_NETWORKS_HINT}")


def _refusal_reason(address: IPAddress) -> str | None:
    """Why ``address`` is refused ("a loopback address"), or None if it is global."""
    if isinstance(address, IPv4Address):
        return _refusal_reason_v4(address)
    plain = IPv6Address(int(address))
    if plain.ipv4_mapped is not None:
        return _embedded_reason("an IPv4-mapped address", plain.ipv4_mapped)
    if plain in _NAT64_PREFIX:
        return _embedded_reason("a NAT64 address", IPv4Address(int(plain) & 0xFFFFFFFF))
    if plain.sixtofour is not None:
        reason = _embedded_reason("a 6to4 address", plain.sixtofour)
        if reason is not None:
            return reason
    if plain.teredo is not None:
        server, client = plain.teredo
        return f"a Teredo address (client {client}, server {server})"
    for net, why in _V6_REFUSED:
        if plain in net:
            return why
    if plain.is_reserved:
        return "a reserved address"
    if not plain.is_global:
        return "a non-global address"
    return None


def _refusal_reason_v4(address: IPv4Address) -> str | None:
    for net, why in _V4_REFUSED:
        if address in net:
            return why
    if not address.is_global:
        return "a non-global address"
    return None


def _embedded_reason(kind: str, embedded: IPv4Address) -> str | None:
    reason = _refusal_reason_v4(embedded)
    return None if reason is None else f"{kind} of {embedded}, {reason}"


def _parse_host(host: str) -> IPAddress | str:
    """Read a URL host as browsers do: an address for any IP spelling, else a name.

    Names come back lower case without a trailing dot. Hosts no DNS name can
    have (stray characters, a numeric last label that is no IPv4 address)
    raise :class:`UnsafeURL`, as browsers refuse them too.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return IPv6Address(unquote(host))
        except ValueError as exc:
            raise UnsafeURL(f"host {host} is not a valid IPv6 address") from exc
    # WHATWG percent-decodes the host before reading it, so %31%32%37.0.0.1
    # is an address to a browser even though getaddrinfo would not say so.
    decoded = unquote(host).lower()
    if _ends_in_number(decoded):
        address = _parse_ipv4(decoded)
        if address is None:
            raise UnsafeURL(f"host {host} is not a valid IPv4 address or host name")
        return address
    name = _normalise_name(decoded)
    if not name or not all(_is_valid_label(label) for label in name.split(".")):
        raise UnsafeURL(f"host {host} is not a valid host name")
    return name


def _is_valid_label(label: str) -> bool:
    # Underscores are not valid in host names but do occur in DNS names in the
    # wild; they cannot turn a name into an address, so they pass.
    return 0 < len(label) <= 63 and all(c.isascii() and (c.isalnum() or c in "-_") for c in label)


def _ends_in_number(host: str) -> bool:
    """WHATWG "ends in a number": the last label is decimal digits or a 0x number."""
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()
    last = labels[-1]
    if last and last.isascii() and last.isdigit():
        return True
    return _parse_ipv4_number(last) is not None


def _parse_ipv4_number(part: str) -> int | None:
    """One part of a WHATWG IPv4 address: decimal, 0x hexadecimal or 0-prefixed octal."""
    if not part or not part.isascii():
        return None
    radix = 10
    if part[:2] in ("0x", "0X"):
        part, radix = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        part, radix = part[1:], 8
    if not part:
        return 0
    if any(c not in _DIGITS[radix] for c in part):
        return None
    return int(part, radix)


def _parse_ipv4(host: str) -> IPv4Address | None:
    """The WHATWG IPv4 parser: 1 to 4 parts, the last filling the remaining bytes."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if len(parts) > 4:
        return None
    numbers = [_parse_ipv4_number(part) for part in parts]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        return None
    value = values[-1]
    for index, n in enumerate(values[:-1]):
        value += n * 256 ** (3 - index)
    return IPv4Address(value)


def _is_localhost_name(name: str) -> bool:
    return name in LOCALHOST_NAMES or name.endswith(".localhost")


def _normalise_name(host: str) -> str:
    return host.strip().lower().removesuffix(".")


def _without_scope(address: IPAddress) -> IPAddress:
    # Network membership should not depend on an IPv6 zone (fe80::1%eth0).
    return IPv6Address(int(address)) if isinstance(address, IPv6Address) else address


def _parse_allowed_entry(entry: str) -> IPNetwork | str:
    """An ``allowed_hosts`` entry as a network (addresses are /32 or /128) or a name."""
    text = entry.strip()
    if not text:
        raise ValueError("empty allowed host entry")
    if "/" in text:
        try:
            return ipaddress.ip_network(text.removeprefix("[").replace("]", ""), strict=False)
        except ValueError as exc:
            raise ValueError(f"allowed host {entry!r} is not a valid network") from exc
    try:
        parsed = _parse_host(text)
    except UnsafeURL as exc:
        raise ValueError(f"allowed host {entry!r} is not a host name or IP address") from exc
    if isinstance(parsed, str):
        return parsed
    return ipaddress.ip_network(_without_scope(parsed))
