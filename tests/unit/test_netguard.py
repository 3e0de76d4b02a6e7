"""The SSRF guard without a network: URL checks, address checks, the resolver."""

from __future__ import annotations

import contextlib
import errno
import re
import socket
from ipaddress import IPv4Address, IPv6Address

import httpx
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given
from hypothesis import strategies as st

from app.netguard import (
    PRIVATE_NETWORKS_HINT,
    GuardedResolver,
    NetPolicy,
    UnsafeAddressError,
    UnsafeURL,
    check_address,
    check_url,
    check_url_for_delivery,
    make_transport,
)

STRICT = NetPolicy()
OPEN = NetPolicy(allow_private=True)

# Every spelling of a refused host, with a fragment the refusal must contain.
REFUSED_HOSTS = [
    # IPv4 loopback, in every spelling browsers and inet_aton accept
    ("http://127.0.0.1/", "host 127.0.0.1 is a loopback address"),
    ("http://127.0.0.1:8000/hook", "loopback"),
    ("http://127.255.255.254/", "loopback"),
    ("http://127.1/", "host 127.1 is 127.0.0.1, a loopback address"),
    ("http://127.0.1/", "is 127.0.0.1"),
    ("http://2130706433/", "is 127.0.0.1"),
    ("http://0x7f000001/", "is 127.0.0.1"),
    ("http://0x7f.1/", "is 127.0.0.1"),
    ("http://0X7F.0.0.1/", "is 127.0.0.1"),
    ("http://017700000001/", "is 127.0.0.1"),
    ("http://0177.1/", "is 127.0.0.1"),
    ("http://0x7f.0x0.0x0.0x1/", "is 127.0.0.1"),
    ("http://127.0.0.1./", "is 127.0.0.1"),
    ("http://%31%32%37.0.0.1/", "is 127.0.0.1"),
    # unspecified and "this network"
    ("http://0/", "host 0 is 0.0.0.0, an unspecified address"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0.0.0.0:8080/", "unspecified"),
    ("http://0.1.2.3/", "this network"),
    # RFC 1918
    ("http://10.0.0.1/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.255/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://0xc0a80101/", "is 192.168.1.1, a private address"),
    ("http://3232235777/", "is 192.168.1.1"),
    # link-local, the metadata service
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://0xa9fea9fe/", "is 169.254.169.254"),
    ("http://2852039166/", "is 169.254.169.254"),
    # CGNAT, special purpose, documentation, benchmarking
    ("http://100.64.0.1/", "CGNAT"),
    ("http://100.127.255.254/", "CGNAT"),
    ("http://192.0.0.8/", "IETF protocol assignment"),
    ("http://192.0.2.10/", "documentation"),
    ("http://198.51.100.7/", "documentation"),
    ("http://203.0.113.9/", "documentation"),
    ("http://198.18.0.1/", "benchmarking"),
    ("http://192.88.99.1/", "6to4 relay"),
    # multicast, reserved, broadcast
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://4294967295/", "broadcast"),
    # IPv6
    ("http://[::1]/", "host ::1 is a loopback address"),
    ("http://[::1]:8080/", "loopback"),
    ("http://[0:0:0:0:0:0:0:1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://[fc00::1]/", "unique-local"),
    ("http://[fd12:3456::1]/", "unique-local"),
    ("http://[fec0::1]/", "site-local"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[ff0e::1]/", "multicast"),
    ("http://[2001:db8::1]/", "documentation"),
    ("http://[3fff::1]/", "documentation"),
    ("http://[100::1]/", "discard-only"),
    ("http://[5f00::1]/", "reserved"),
    # IPv4 addresses inside IPv6 ones
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped address of 127.0.0.1, a loopback"),
    ("http://[::ffff:7f00:1]/", "IPv4-mapped address of 127.0.0.1"),
    ("http://[::ffff:169.254.169.254]/", "IPv4-mapped address of 169.254.169.254"),
    ("http://[::ffff:10.0.0.1]/", "IPv4-mapped address of 10.0.0.1, a private"),
    ("http://[::127.0.0.1]/", "IPv4-compatible"),
    ("http://[::ffff:0:127.0.0.1]/", "IPv4-translated"),
    ("http://[64:ff9b::127.0.0.1]/", "NAT64 address of 127.0.0.1"),
    ("http://[64:ff9b::a9fe:a9fe]/", "NAT64 address of 169.254.169.254"),
    ("http://[64:ff9b:1::1]/", "local-use NAT64"),
    ("http://[2002:7f00:1::1]/", "6to4 address of 127.0.0.1"),
    ("http://[2002:c0a8:101::1]/", "6to4 address of 192.168.1.1"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
    # localhost names
    ("http://localhost/", "host localhost is a loopback name"),
    ("http://localhost:8000/hook", "loopback name"),
    ("http://LOCALHOST/", "loopback name"),
    ("http://LocalHost./", "loopback name"),
    ("http://api.localhost/", "loopback name"),
    ("http://a.b.localhost./", "loopback name"),
    ("http://localhost.localdomain/", "loopback name"),
    ("http://ip6-localhost/", "loopback name"),
    ("HTTP://LOCALHOST:80/", "loopback name"),
]

# Refused whatever the policy: they are not URLs Baton can send to.
MALFORMED = [
    ("ftp://example.com/x", "must be http or https, not 'ftp'"),
    ("file:///etc/passwd", "must be http or https, not 'file'"),
    ("javascript:alert(1)", "must be http or https, not 'javascript'"),
    ("gopher://example.com/", "must be http or https"),
    ("ws://example.com/", "must be http or https"),
    ("example.com/hook", "no scheme"),
    ("//example.com/hook", "no scheme"),
    ("/hook", "no scheme"),
    ("", "no scheme"),
    (" http://example.com/", "no scheme"),
    ("http://user:pass@example.com/", "user name or password"),
    ("http://user@example.com/", "user name or password"),
    ("https://:secret@example.com/", "user name or password"),
    ("http://example.com%2F@127.0.0.1/", "user name or password"),
    ("http://evil.example:80@127.0.0.1/", "user name or password"),
    ("http:///hook", "no host"),
    ("http://:8080/", "no host"),
    ("http://example.com:0/", "port 0 is out of range"),
    ("http://example.com:70000/", "port 70000 is out of range"),
    ("http://exa%20mple.com/", "not a valid host name"),
    ("http://1.2.3.4.5/", "not a valid IPv4 address"),
    ("http://256.256.256.256/", "invalid URL"),
    ("http://example.123/", "not a valid IPv4 address"),
    ("http://0x100000000/", "not a valid IPv4 address"),
    ("http://0177.0.0.1/", "invalid URL"),
    ("http://[::1/", "invalid URL"),
    ("http://exa\tmple.com/", "invalid URL"),
]

ACCEPTED = [
    "https://example.com/x",
    "http://example.com/",
    "HTTPS://Example.COM/Path?q=1#frag",
    "https://example.com./x",
    "https://shop.example/jobs/validate",
    "https://api.example.com:8443/hook",
    "http://8.8.8.8:8080/",
    "http://1.1.1.1/",
    "http://134744072/",
    "http://[2606:4700::1111]/",
    "https://[2001:4860:4860::8888]:443/",
    "http://[::ffff:8.8.8.8]/",
    "http://[64:ff9b::8.8.8.8]/",
    "http://[2002:808:808::1]/",
    "https://bücher.example/",
    "https://xn--bcher-kva.example/",
    "https://under_score.example.com/",
    "https://localhost.example.com/",
    "https://mylocalhost/",
    "https://0x7f.example/",
    "http://@example.com/",
]


@pytest.mark.parametrize(("url", "fragment"), REFUSED_HOSTS)
def test_check_url_refuses_non_global_hosts(url: str, fragment: str) -> None:
    with pytest.raises(UnsafeURL) as info:
        check_url(url, STRICT)
    assert fragment in str(info.value)
    assert str(info.value).endswith(PRIVATE_NETWORKS_HINT)


@pytest.mark.parametrize(("url", "fragment"), REFUSED_HOSTS)
def test_allow_private_accepts_non_global_hosts(url: str, fragment: str) -> None:
    check_url(url, OPEN)


@pytest.mark.parametrize(("url", "fragment"), MALFORMED)
@pytest.mark.parametrize("policy", [STRICT, OPEN], ids=["strict", "open"])
def test_check_url_refuses_malformed_urls_whatever_the_policy(
    url: str, fragment: str, policy: NetPolicy
) -> None:
    with pytest.raises(UnsafeURL) as info:
        check_url(url, policy)
    assert fragment in str(info.value)


@pytest.mark.parametrize("url", ACCEPTED)
def test_check_url_accepts_public_hosts(url: str) -> None:
    check_url(url, STRICT)


def test_the_message_says_why_and_how_to_allow() -> None:
    with pytest.raises(UnsafeURL) as info:
        check_url("http://127.0.0.1/hook", STRICT)
    assert str(info.value) == (
        "host 127.0.0.1 is a loopback address; private networks are not allowed "
        "(set BATON_ALLOW_PRIVATE_NETWORKS=true to allow)"
    )


def test_unsafe_url_is_a_value_error() -> None:
    assert issubclass(UnsafeURL, ValueError)


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        ({"localhost"}, "http://localhost:8000/"),
        ({"LOCALHOST."}, "http://localhost./"),
        ({"api.localhost"}, "http://API.localhost/"),
        ({"127.0.0.1"}, "http://127.0.0.1:9000/"),
        ({"127.0.0.1"}, "http://0x7f.1/"),
        ({"127.0.0.0/8"}, "http://127.9.9.9/"),
        ({"10.0.0.0/8"}, "http://10.1.2.3/"),
        ({"10.1.2.3/8"}, "http://10.200.0.1/"),
        ({"::1"}, "http://[::1]/"),
        ({"[::1]"}, "http://[::1]:8080/"),
        ({"fd00::/8"}, "http://[fd00::42]/"),
        ({"169.254.169.254"}, "http://169.254.169.254/"),
        ({"127.0.0.1"}, "http://[::ffff:127.0.0.1]/"),
    ],
)
def test_allowed_hosts_are_exceptions(allowed: set[str], url: str) -> None:
    policy = NetPolicy.from_strings(False, allowed)
    check_url(url, policy)
    with pytest.raises(UnsafeURL):
        check_url(url, STRICT)


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        ({"localhost"}, "http://api.localhost/"),
        ({"api.localhost"}, "http://localhost/"),
        ({"127.0.0.1"}, "http://127.0.0.2/"),
        ({"10.0.0.0/8"}, "http://192.168.0.1/"),
        ({"::1"}, "http://127.0.0.1/"),
        ({"example.com"}, "http://127.0.0.1/"),
    ],
)
def test_allowed_hosts_allow_nothing_else(allowed: set[str], url: str) -> None:
    with pytest.raises(UnsafeURL):
        check_url(url, NetPolicy.from_strings(False, allowed))


def test_allowed_hosts_do_not_excuse_malformed_urls() -> None:
    policy = NetPolicy.from_strings(False, ["localhost"])
    with pytest.raises(UnsafeURL, match="user name or password"):
        check_url("http://user:pw@localhost/", policy)
    with pytest.raises(UnsafeURL, match="http or https"):
        check_url("ftp://localhost/", policy)


def test_from_strings_normalises_and_skips_blanks() -> None:
    policy = NetPolicy.from_strings(
        True, ["", " LocalHost. ", "10.1.2.3/8", "[::1]", "0x7f.1", "  ", "Hooks.Internal"]
    )
    assert policy.allow_private is True
    assert policy.allowed_hosts == frozenset(
        {"localhost", "10.0.0.0/8", "::1/128", "127.0.0.1/32", "hooks.internal"}
    )
    assert policy == NetPolicy(
        True, frozenset({"localhost", "10.0.0.0/8", "::1", "127.0.0.1", "hooks.internal"})
    )


@pytest.mark.parametrize(
    "entry", ["http://example.com", "exa mple.com", "10.0.0.0/33", "localhost:8000", "1.2.3.4.5"]
)
def test_invalid_allowed_hosts_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="allowed host"):
        NetPolicy.from_strings(False, [entry])


def test_policy_is_frozen_and_hashable() -> None:
    policy = NetPolicy.from_strings(False, ["localhost"])
    with pytest.raises(AttributeError):
        policy.allow_private = True  # type: ignore[misc]
    assert hash(policy) == hash(NetPolicy(False, frozenset({"localhost"})))


def test_check_url_for_delivery_is_the_same_static_check() -> None:
    check_url_for_delivery("https://example.com/", STRICT)
    check_url_for_delivery(httpx.URL("http://127.0.0.1/"), OPEN)
    with pytest.raises(UnsafeURL, match="loopback"):
        check_url_for_delivery("http://127.0.0.1/", STRICT)
    with pytest.raises(UnsafeURL, match="loopback"):
        check_url_for_delivery(httpx.URL("http://[::1]/"), STRICT)
    with pytest.raises(UnsafeURL, match="user name"):
        check_url_for_delivery(httpx.URL("http://u:p@example.com/"), OPEN)


# -- check_address -----------------------------------------------------------


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "10.0.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.251",
        "::1",
        "::",
        "fe80::1%eth0",
        "fd00::1",
        "::ffff:127.0.0.1",
        "[::1]",
        IPv4Address("192.168.0.1"),
        IPv6Address("fc00::1"),
    ],
)
def test_check_address_refuses_non_global(ip: str | IPv4Address | IPv6Address) -> None:
    with pytest.raises(UnsafeURL, match="private networks are not allowed"):
        check_address(ip, STRICT)
    check_address(ip, OPEN)


@pytest.mark.parametrize(
    "ip", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", IPv4Address("93.184.215.14"), "::ffff:8.8.8.8"]
)
def test_check_address_accepts_global(ip: str | IPv4Address | IPv6Address) -> None:
    check_address(ip, STRICT)


def test_check_address_names_the_host_that_resolved() -> None:
    with pytest.raises(UnsafeURL) as info:
        check_address("127.0.0.1", STRICT, host="rebind.example")
    assert str(info.value).startswith(
        "host rebind.example resolves to 127.0.0.1, a loopback address;"
    )


def test_check_address_honours_allowed_names_and_networks() -> None:
    policy = NetPolicy.from_strings(False, ["hooks.internal", "10.0.0.0/8"])
    check_address("192.168.1.1", policy, host="Hooks.Internal.")
    check_address("10.9.8.7", policy, host="other.example")
    check_address("10.9.8.7", policy)
    with pytest.raises(UnsafeURL):
        check_address("192.168.1.1", policy, host="other.example")


@pytest.mark.parametrize("ip", ["not-an-ip", "127.1", "", "1.2.3.4.5"])
def test_check_address_refuses_non_addresses(ip: str) -> None:
    with pytest.raises(UnsafeURL, match="not an IP address"):
        check_address(ip, OPEN)


# -- numeric host parsing ----------------------------------------------------

addresses = st.integers(min_value=0, max_value=2**32 - 1)


def _spell(part: int, radix: str) -> str:
    return {"dec": str(part), "hex": hex(part), "oct": "0" + oct(part)[2:]}[radix]


@given(
    value=addresses,
    shape=st.integers(1, 4),
    radixes=st.lists(st.sampled_from(["dec", "hex", "oct"]), min_size=4, max_size=4),
)
def test_numeric_spellings_mean_what_inet_aton_says(
    value: int, shape: int, radixes: list[str]
) -> None:
    """Every 1- to 4-part spelling, any radix per part, is judged as the address inet_aton reads."""
    octets = list(value.to_bytes(4, "big"))
    tail = int.from_bytes(bytes(octets[shape - 1 :]), "big")
    parts = [_spell(p, r) for p, r in zip([*octets[: shape - 1], tail], radixes, strict=False)]
    host = ".".join(parts)
    expected = IPv4Address(value)
    assert IPv4Address(socket.inet_aton(host)) == expected
    try:
        check_url(f"http://{host}/", STRICT)
    except UnsafeURL as exc:
        if str(exc).startswith("invalid URL"):
            # httpx refuses dotted quads with leading zeros, so it cannot send them either.
            assert shape == 4
            return
        assert _non_global(str(expected))
        if host != str(expected):
            assert f"host {host} is {expected}, " in str(exc)
    else:
        assert not _non_global(str(expected))


@given(st.text(max_size=60))
def test_check_url_only_ever_raises_unsafe_url(text: str) -> None:
    for url in (text, f"http://{text}/", f"http://[{text}]/"):
        with contextlib.suppress(UnsafeURL):
            check_url(url, STRICT)


# -- GuardedResolver ---------------------------------------------------------


class FakeResolver(AbstractResolver):
    """Answers from a table, as a DNS server under an attacker's control would."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.closed = False

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
                family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in self.answers[host]
        ]

    async def close(self) -> None:
        self.closed = True


async def test_resolver_returns_checked_public_addresses() -> None:
    inner = FakeResolver(
        {"hooks.example": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]}
    )
    resolver = GuardedResolver(STRICT, inner)
    results = await resolver.resolve("hooks.example", 443)
    assert [r["host"] for r in results] == inner.answers["hooks.example"]
    assert inner.asked == ["hooks.example"]


@pytest.mark.parametrize(
    "answer",
    [["127.0.0.1"], ["8.8.8.8", "10.0.0.5"], ["2606:4700::1111", "::1"], ["169.254.169.254"]],
)
async def test_resolver_refuses_if_any_address_is_refused(answer: list[str]) -> None:
    resolver = GuardedResolver(STRICT, FakeResolver({"rebind.example": answer}))
    with pytest.raises(UnsafeAddressError) as info:
        await resolver.resolve("rebind.example", 80)
    message = str(info.value)
    assert message.startswith("host rebind.example resolves to ")
    assert message.endswith(PRIVATE_NETWORKS_HINT)
    assert isinstance(info.value, OSError)
    assert info.value.errno == errno.EACCES
    # aiohttp builds its connection error's message from strerror.
    assert info.value.strerror == message
    assert isinstance(info.value.unsafe, UnsafeURL)


async def test_resolver_refuses_disguised_literals_and_localhost_names() -> None:
    inner = FakeResolver({"0x7f.1": ["127.0.0.1"], "api.localhost": ["127.0.0.1"]})
    resolver = GuardedResolver(STRICT, inner)
    with pytest.raises(UnsafeAddressError, match=r"host 0x7f\.1 is 127\.0\.0\.1"):
        await resolver.resolve("0x7f.1", 80)
    with pytest.raises(UnsafeAddressError, match="loopback name"):
        await resolver.resolve("api.localhost", 80)
    assert inner.asked == []


async def test_resolver_lets_allowed_hosts_through() -> None:
    inner = FakeResolver({"HOOKS.internal.": ["10.0.0.7"], "other.internal": ["172.16.0.1"]})
    policy = NetPolicy.from_strings(False, ["hooks.internal", "172.16.0.0/12"])
    resolver = GuardedResolver(policy, inner)
    assert [r["host"] for r in await resolver.resolve("HOOKS.internal.", 80)] == ["10.0.0.7"]
    assert [r["host"] for r in await resolver.resolve("other.internal", 80)] == ["172.16.0.1"]


async def test_resolver_with_allow_private_checks_nothing() -> None:
    resolver = GuardedResolver(OPEN, FakeResolver({"db.internal": ["10.0.0.7"]}))
    assert [r["host"] for r in await resolver.resolve("db.internal", 80)] == ["10.0.0.7"]


async def test_resolver_passes_lookup_errors_through() -> None:
    resolver = GuardedResolver(STRICT, FakeResolver({}))
    with pytest.raises(OSError, match="no such host") as info:
        await resolver.resolve("missing.example", 80)
    assert not isinstance(info.value, UnsafeAddressError)


async def test_resolver_closes_its_inner_resolver() -> None:
    inner = FakeResolver({})
    await GuardedResolver(STRICT, inner).close()
    assert inner.closed


async def test_resolver_defaults_to_aiohttps_resolver() -> None:
    # Built outside a loop is fine; the default resolver is made on first use.
    resolver = GuardedResolver(STRICT)
    try:
        with pytest.raises(UnsafeAddressError, match="loopback"):
            await resolver.resolve("127.0.0.1", 80)
    finally:
        await resolver.close()


async def test_resolver_checks_real_lookups() -> None:
    # The machine's own name usually maps to a loopback address in /etc/hosts.
    name = socket.gethostname()
    if name.lower().rstrip(".") == "localhost" or name.lower().endswith(".localhost"):
        pytest.skip("the host name is a localhost name, refused without a lookup")
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except OSError:
        pytest.skip("the host name does not resolve here")
    addresses = {str(info[4][0]) for info in infos}
    if not all(_non_global(a) for a in addresses):
        pytest.skip(f"{name} resolves to a global address here")
    resolver = GuardedResolver(STRICT)
    try:
        with pytest.raises(UnsafeAddressError, match=re.escape(f"host {name} resolves to ")):
            await resolver.resolve(name, 80)
    finally:
        await resolver.close()


def _non_global(address: str) -> bool:
    try:
        check_address(address, STRICT)
    except UnsafeURL:
        return True
    return False


async def test_make_transport_closes_cleanly_when_never_used() -> None:
    transport = make_transport(STRICT, limit=4)
    await transport.aclose()
