"""Which peers a connection may reach: forbidden addresses, one pinned DNS answer, connect checks.

The resolver tables here are the policy's own injection point (``AddressPolicy(resolver=...)``);
the sessions are real aiohttp sessions from ``client_session`` against real loopback servers.
Rebinding with a real DNS server that changes its answer: tests/e2e/test_rebinding.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from aiohttp import web

from pointercache.adapters.addresses import AddressPolicy, forbidden_address
from pointercache.adapters.http import client_session, client_timeout, redirect_target
from pointercache.errors import FetchUnavailable, ForbiddenURI
from pointercache.stage.allow import AllowList
from pointercache.stage.fetchers import FetchOptions
from pointercache.stage.fetchers.http import HttpFetcher


@pytest.mark.parametrize(
    ("addr", "reason"),
    [
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("127.0.0.1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("239.1.1.1", "multicast"),
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64, RFC 6052
        ("64:ff9b:1::a9fe:a9fe", "local-use NAT64"),  # RFC 8215: refused whole
        ("64:ff9b:1::808:808", "local-use NAT64"),
        ("::ffff:0:a9fe:a9fe", "metadata"),  # IPv4-translated (SIIT), RFC 2765
        ("::ffff:0:7f00:1", "loopback"),
        ("2002:a9fe:a9fe::1", "metadata"),  # 6to4
        ("2001:0:4136:e378:8000:63bf:5601:5601", "metadata"),  # Teredo client 169.254.169.254
        ("2001:db8::5efe:a9fe:a9fe", "metadata"),  # ISATAP interface identifier
        ("2001:db8::200:5efe:7f00:1", "loopback"),
        ("::a9fe:a9fe", "metadata"),  # IPv4-compatible
        ("10.0.0.1", None),
        ("100.64.0.1", None),
        ("2001:db8::1", None),
        ("64:ff9b::808:808", None),
        ("::ffff:0:808:808", None),
        ("2001:db8::5efe:a00:1", None),
    ],
)
def test_forbidden_address_table(addr: str, reason: str | None) -> None:
    """forbidden_address names the class of a forbidden address and passes ordinary ones."""
    got = forbidden_address(addr)
    if reason is None:
        assert got is None
    else:
        assert got is not None
        assert reason in got


def table(answers: dict[str, list[str]]) -> Callable[[str, int | None], Sequence[str]]:
    """A fixed DNS answer table that counts the questions it was asked."""
    asked: list[str] = []

    def resolve(host: str, port: int | None) -> Sequence[str]:
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


DNS = {
    "models.example.com": ["203.0.113.7", "2001:db8::7"],
    "rebind.example.com": ["203.0.113.8", "127.0.0.1"],
    "meta.example.com": ["169.254.169.254"],
    "mapped.example.com": ["::ffff:169.254.169.254"],
    "minio.svc": ["10.96.0.12"],
    "localhost": ["127.0.0.1"],
}


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("models.example.com", True),
        ("minio.svc", True),
        ("rebind.example.com", False),
        ("meta.example.com", False),
        ("mapped.example.com", False),
        ("localhost", False),
    ],
)
def test_every_resolved_address_is_checked(host: str, ok: bool) -> None:
    """Every address of the one answer must be allowed; a mixed answer is refused whole."""
    policy = AddressPolicy(resolver=table(DNS))
    if ok:
        assert policy.addresses(host, 443) == DNS[host]
    else:
        with pytest.raises(ForbiddenURI, match=r"address|local"):
            policy.addresses(host, 443)


def test_a_dns_name_in_a_prefix_does_not_exempt_what_it_resolves_to() -> None:
    """Naming meta.example.com in --allow still refuses its metadata answer (rebinding)."""
    allow = AllowList(["https://meta.example.com"], resolver=table(DNS))
    allow.check("https://meta.example.com/m.tgz")  # the URI is fine; the peer is not
    with pytest.raises(ForbiddenURI, match="metadata"):
        allow.peers.addresses("meta.example.com", 443)


def _spellings(address: str) -> list[str]:
    """``address`` written every way RFC 4291 section 2.2 allows (and in upper case)."""
    ip = ipaddress.IPv6Address(address)
    groups = ip.exploded.split(":")
    tail = str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    short = ":".join(g.lstrip("0") or "0" for g in groups[:6])
    high = re.sub(r"(^|:)0(:0)+(:|$)", "::", short, count=1)
    found = [
        ip.compressed,
        ip.exploded,  # every group, leading zeros
        ":".join(g.lstrip("0") or "0" for g in groups),  # every group, no leading zeros
        ip.compressed.upper(),
        ip.exploded.upper(),
        ":".join(groups[:6]) + ":" + tail,  # the low 32 bits as a dotted quad
        high + ("" if high.endswith("::") else ":") + tail,  # compressed, dotted quad
    ]
    assert all(ipaddress.IPv6Address(each) == ip for each in found)
    return found


@pytest.mark.parametrize(
    ("spelling", "reason"),
    [
        (s, reason)
        for address, reason in (
            ("64:ff9b:1::a9fe:a9fe", "local-use NAT64"),
            ("::ffff:0:a9fe:a9fe", "metadata"),
            ("64:ff9b::a9fe:a9fe", "metadata"),
            ("::ffff:a9fe:a9fe", "metadata"),
        )
        for s in _spellings(address)
    ],
)
def test_embedded_forms_are_refused_in_every_spelling(spelling: str, reason: str) -> None:
    """An IPv6 form carrying the metadata address is refused however it is written: in a URI,
    in a DNS answer, and at connect()."""
    assert reason in (forbidden_address(spelling) or "")
    with pytest.raises(ForbiddenURI, match=reason):
        AllowList([]).check(f"http://[{spelling}]:80/m.bin")
    policy = AddressPolicy(resolver=table({"evil.example.com": [spelling]}))
    with pytest.raises(ForbiddenURI, match=reason):
        policy.addresses("evil.example.com", 80)
    with pytest.raises(ForbiddenURI, match=reason):
        policy.admit(spelling, 80)


def test_a_name_resolving_to_loopback_says_to_name_the_address() -> None:
    """A DNS name answering loopback is refused with the hint to use and allow the address."""
    with pytest.raises(ForbiddenURI) as info:
        AllowList([], resolver=table(DNS)).peers.addresses("rebind.example.com", 443)
    assert "use the address itself in the registry URI" in str(info.value)
    with pytest.raises(ForbiddenURI) as info:
        AllowList([], resolver=table(DNS)).peers.addresses("meta.example.com", 443)
    assert "--allow" not in str(info.value)


def test_named_localhost_is_allowed_on_its_port_only() -> None:
    """--allow http://localhost:5000 lets localhost:5000 resolve and connect, nothing else."""
    allow = AllowList(["http://localhost:5000/mlflow"], resolver=table(DNS))
    assert allow.peers.addresses("localhost", 5000) == ["127.0.0.1"]
    allow.peers.admit("127.0.0.1", 5000)
    with pytest.raises(ForbiddenURI):
        allow.peers.addresses("localhost", 5001)
    with pytest.raises(ForbiddenURI):
        allow.peers.admit("127.0.0.1", 5001)


def test_named_ipv6_loopback_matches_in_any_spelling() -> None:
    """--allow http://[0:0::1]:8080 names ::1 port 8080, however the address is written."""
    allow = AllowList(["http://[0:0::1]:8080"])
    allow.peers.admit("::1", 8080)
    assert allow.peers.addresses("0::1", 8080) == ["0::1"]
    with pytest.raises(ForbiddenURI):
        allow.peers.admit("::1", 8081)


def test_unresolvable_name_is_a_dns_error() -> None:
    """A name that does not resolve raises socket.gaierror (the client reports a DNS failure)."""
    with pytest.raises(socket.gaierror):
        AddressPolicy(resolver=table(DNS)).addresses("nowhere.example.com", 443)


def test_naming_adds_literal_endpoints_only() -> None:
    """naming() exempts an operator's loopback endpoint; a DNS name gains nothing."""
    policy = AddressPolicy(resolver=table(DNS)).naming(
        [("127.0.0.1", 8080), ("meta.example.com", 443)]
    )
    policy.admit("127.0.0.1", 8080)
    assert policy.addresses("127.0.0.1", 8080) == ["127.0.0.1"]
    with pytest.raises(ForbiddenURI):
        policy.addresses("meta.example.com", 443)


@pytest.mark.parametrize(
    ("current", "location", "expected"),
    [
        ("http://reg.example/m.json", "/v2/m.json", "http://reg.example/v2/m.json"),
        ("https://reg.example/m.json", "https://cdn.example/m.json", "https://cdn.example/m.json"),
        ("http://127.0.0.1:8080/m.json", "/v2/m.json", "http://127.0.0.1:8080/v2/m.json"),
    ],
)
def test_redirect_target_allowed(current: str, location: str, expected: str) -> None:
    """A redirect to an ordinary host, or back to the operator-named one, is followed."""
    policy = AddressPolicy().naming([("127.0.0.1", 8080)])
    assert redirect_target(current, location, policy) == expected


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://localhost/m.json",
        "http://127.0.0.1:9090/m.json",
        "https://user:pw@cdn.example/m.json",
        "file:///etc/shadow",
        "ftp://cdn.example/m.json",
        "http://[1.2.3.4]/m.json",  # urlsplit raises ValueError: refused, not a traceback
        "http://[::1/m.json",
        "",
    ],
)
def test_redirect_target_refused(location: str) -> None:
    """A manifest redirect to metadata, loopback, user info or another scheme is refused."""
    policy = AddressPolicy().naming([("127.0.0.1", 8080)])
    with pytest.raises(ForbiddenURI) as info:
        redirect_target("http://127.0.0.1:8080/m.json", location, policy)
    assert "pw" not in str(info.value)


def test_https_to_http_redirect_refused() -> None:
    """A downgrade from https to http is refused."""
    with pytest.raises(ForbiddenURI, match="https to http"):
        redirect_target("https://reg.example/m.json", "http://reg.example/m.json", AddressPolicy())


@pytest.fixture
async def loopback() -> AsyncIterator[tuple[int, list[str]]]:
    """A loopback HTTP server (port, paths it was asked for)."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=b"hello")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1], seen
    finally:
        await runner.cleanup()


async def test_session_never_connects_to_a_forbidden_literal(
    loopback: tuple[int, list[str]],
) -> None:
    """Even a URL nobody checked cannot reach loopback: the socket factory refuses the peer."""
    port, seen = loopback
    async with client_session(client_timeout(5), peers=AddressPolicy()) as session:
        with pytest.raises(ForbiddenURI, match="loopback"):
            await session.get(f"http://127.0.0.1:{port}/secret")
    assert seen == []


async def test_session_connects_to_exactly_the_checked_answer(
    loopback: tuple[int, list[str]],
) -> None:
    """A name is resolved once per connection through the policy, and that answer is used."""
    port, seen = loopback
    resolver = table({"localhost": ["127.0.0.1"], "svc.test": ["127.0.0.1"]})
    peers = AddressPolicy([("localhost", port)], resolver=resolver)
    async with client_session(client_timeout(5), peers=peers) as session:
        async with session.get(f"http://localhost:{port}/ok") as response:
            assert await response.read() == b"hello"
        with pytest.raises(ForbiddenURI, match="resolves to a loopback"):
            await session.get(f"http://svc.test:{port}/rebound")
    assert seen == ["/ok"]
    assert resolver.asked == ["localhost", "svc.test"]  # type: ignore[attr-defined]


async def test_fetcher_reports_an_unresolvable_name_as_transient(tmp_path: Path) -> None:
    """The HTTP fetcher turns the policy's DNS failure into FetchUnavailable (retried)."""
    options = FetchOptions(allow=AllowList([], resolver=table(DNS)))
    fetcher = HttpFetcher(options)
    try:
        with pytest.raises(FetchUnavailable):
            await fetcher.fetch("http://nowhere.example.com/m.bin", tmp_path / "m.bin")
    finally:
        await fetcher.aclose()
    assert not (tmp_path / "m.bin").exists()


async def test_fetcher_refuses_a_name_resolving_to_loopback(
    loopback: tuple[int, list[str]], tmp_path: Path
) -> None:
    """A registry URI whose name answers loopback is ForbiddenURI; the server sees nothing."""
    port, seen = loopback
    options = FetchOptions(allow=AllowList([], resolver=table({"art.test": ["127.0.0.1"]})))
    fetcher = HttpFetcher(options)
    try:
        with pytest.raises(ForbiddenURI, match="loopback"):
            await fetcher.fetch(f"http://art.test:{port}/m.bin", tmp_path / "m.bin")
    finally:
        await fetcher.aclose()
    await asyncio.sleep(0)
    assert seen == []
