"""Which network peers pointercache may connect to, and the resolver that pins what was checked.

A DNS answer is untrusted input, and so is the moment it is given: a name may resolve to an
allowed address when it is checked and to ``127.0.0.1`` or ``169.254.169.254`` a moment later,
when the client resolves it again to connect (DNS rebinding). So names are resolved **once**,
by ``AddressPolicy.addresses``, and every address of that answer is checked; the HTTP client
(``pointercache.adapters.http.client_session``) gets a resolver that answers with exactly those
addresses (``adapters.http.pinned_resolver``), and a socket factory that checks each address
again just before ``connect()`` (``AddressPolicy.admit``), so no code path can reach a forbidden
peer. This module is standard library only.

Forbidden peers (``forbidden_address``): loopback, link-local, unspecified, multicast, reserved
and ``0.0.0.0/8`` addresses and the cloud metadata endpoints, in every IPv6 form that carries an
IPv4 address: IPv4-mapped (``::ffff:a.b.c.d``, RFC 4291), IPv4-compatible (``::a.b.c.d``),
IPv4-translated (``::ffff:0:a.b.c.d``, RFC 2765), NAT64 (``64:ff9b::/96``, RFC 6052), 6to4
(``2002::/16``, RFC 3056), Teredo (``2001::/32``, RFC 4380) and ISATAP interface identifiers
(``::5efe:a.b.c.d``, RFC 5214).
The local-use NAT64 range ``64:ff9b:1::/48`` (RFC 8215) is refused whole: which IPv4 address
one of its addresses reaches depends on the prefix length the translator was set up with.
The names ``localhost``, ``*.localhost`` and the metadata names (``LOCAL_NAMES``) are refused
without a lookup.

An endpoint the operator **named literally** (``--allow http://127.0.0.1:8080``, a registry
``mlflow+http://localhost:5000``) is allowed on that host and port: naming the address (or
``localhost``) is the opt-in. A DNS name never exempts what it resolves to.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from pointercache.errors import ForbiddenURI

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, "int | None"], "Sequence[str]"]
"""``(host, port) -> addresses``; ``resolve`` (getaddrinfo) unless one is injected (tests)."""
Endpoint = tuple[str, "int | None"]
"""``(host, port)`` as a URI spells them (host lower-case, IPv6 without brackets)."""

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.0.23",  # Tencent Cloud
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
        "192.0.0.192",  # Oracle Cloud (legacy)
        "fd00:ec2::254",  # AWS IMDS over IPv6
    )
)
LOCAL_NAMES = frozenset(
    {
        "localhost",
        "ip6-localhost",
        "ip6-loopback",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    }
)
"""Hostnames refused without a DNS lookup (they always mean this machine or its metadata)."""

_CLASSES = (
    ("is_loopback", "a loopback address"),
    ("is_link_local", "a link-local address"),
    ("is_unspecified", "an unspecified address"),
    ("is_multicast", "a multicast address"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAME_HINT = (
    "; a name that resolves there is never allowed: use the address itself in the registry URI"
    " and name it in --allow"
)


def _embedded(ip: IPAddress) -> Iterator[IPAddress]:
    """The address itself and every IPv4 address an IPv6 form carries."""
    yield ip
    if not isinstance(ip, ipaddress.IPv6Address):
        return
    if ip.ipv4_mapped is not None:
        yield ip.ipv4_mapped
    if ip.sixtofour is not None:
        yield ip.sixtofour
    if ip.teredo is not None:
        yield from ip.teredo
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64 or ip in _TRANSLATED or (int(ip) >> 32 == 0 and int(ip) > 1):
        yield low  # NAT64, IPv4-translated (SIIT), IPv4-compatible
    if (int(ip) >> 32) & 0xFFFFFFFF & 0xFDFFFFFF == 0x5EFE:  # noqa: PLR2004 - ISATAP ::0:5efe:, ::200:5efe:
        yield low


def forbidden_address(addr: str | IPAddress) -> str | None:
    """Why ``addr`` must not be connected to (loopback, metadata...), or None if it may."""
    ip = ipaddress.ip_address(addr) if isinstance(addr, str) else addr
    if ip in _NAT64_LOCAL:  # which IPv4 address it reaches depends on the translator's setup
        return "a local-use NAT64 address"
    for each in _embedded(ip):
        if each in METADATA_ADDRESSES:
            return "a cloud metadata address"
        for attr, text in _CLASSES:
            if getattr(each, attr):
                return text
        # IPv6 "reserved" covers ::/8, i.e. NAT64 and mapped forms, which are checked above.
        if isinstance(each, ipaddress.IPv4Address) and (each.is_reserved or each in _THIS_NETWORK):
            return "a reserved address"
    return None


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells (``1.2.3.4``, ``::1`` without brackets), or None for a name."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0] if ":" in host else host)
    except ValueError:
        return None


def local_name(host: str) -> bool:
    """True for the names that always mean this machine or its metadata (``LOCAL_NAMES``)."""
    host = host.lower().rstrip(".")
    return host in LOCAL_NAMES or host.endswith(".localhost")


def names_local(host: str) -> bool:
    """True when ``host`` itself spells a loopback/metadata target (so naming it is explicit)."""
    if local_name(host):
        return True
    ip = ip_literal(host)
    return ip is not None and forbidden_address(ip) is not None


def _canonical(host: str) -> str:
    """``host`` lower-case, an IP address in its compressed form (``0:0::1`` → ``::1``)."""
    ip = ip_literal(host)
    return str(ip) if ip is not None else host.lower()


def resolve(host: str, port: int | None) -> list[str]:
    """Every address ``host`` resolves to (``socket.getaddrinfo``; blocking)."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    # sockaddr[0] may carry an IPv6 scope ("fe80::1%eth0"); the scope is not part of the address
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


class AddressPolicy:
    """Which peers may be connected to: everything but the forbidden addresses, plus the
    endpoints an operator named literally.

    ``named``: ``(host, port)`` pairs from operator-given URIs (``--allow`` prefixes, registry
    URIs); only those that spell a local target (``names_local``) change anything. ``open``
    admits every peer (the policy of ``AllowAll``, for operator-given URIs in tests).
    """

    def __init__(
        self,
        named: Iterable[Endpoint] = (),
        *,
        resolver: Resolver | None = None,
        open: bool = False,  # noqa: A002 - the natural word; shadows nothing used here
    ) -> None:
        self.resolver: Resolver = resolver or resolve
        self.open = open
        self.named: frozenset[Endpoint] = frozenset(
            (_canonical(host), port) for host, port in named if names_local(host)
        )
        self._granted: set[tuple[str, int]] = set()
        """Addresses a named local host resolved to (``localhost`` → ``127.0.0.1``)."""

    def naming(self, endpoints: Iterable[Endpoint]) -> AddressPolicy:
        """A copy that also allows these operator-named endpoints (a registry's own host)."""
        return AddressPolicy([*self.named, *endpoints], resolver=self.resolver, open=self.open)

    def exempt(self, host: str, port: int | None) -> bool:
        """True if the operator named ``host:port`` literally (or the policy is open)."""
        return self.open or (_canonical(host), port) in self.named

    def check_host(self, host: str, port: int | None, shown: str) -> None:
        """Refuse a local name or a forbidden literal address without a lookup (``ForbiddenURI``).

        A DNS name passes here; its addresses are checked when it is resolved to connect.
        """
        if self.exempt(host, port):
            return
        if local_name(host):
            raise ForbiddenURI(f"{shown}: {host!r} is a local or metadata host")
        ip = ip_literal(host)
        reason = None if ip is None else forbidden_address(ip)
        if reason:
            raise ForbiddenURI(f"{shown}: {host!r} is {reason}")

    def addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` once and return its addresses if every one is allowed (blocking).

        ``ForbiddenURI`` if any address (or the name itself) is forbidden — an answer that mixes
        a public and a loopback address is refused whole. ``OSError`` (``socket.gaierror``) if
        the name does not resolve; the HTTP client reports it as a DNS failure (transient).
        """
        shown = f"{host}:{port}"
        if ip_literal(host) is not None:
            self.admit(host, port)
            return [host]
        self.check_host(host, port, shown)
        try:
            found = [str(ipaddress.ip_address(a)) for a in self.resolver(host, port)]
        except (UnicodeError, ValueError) as exc:
            raise socket.gaierror(socket.EAI_NONAME, f"cannot resolve {host!r}") from exc
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"{host!r} has no address")
        if self.exempt(host, port):
            self._granted.update((a, port) for a in found)
            return found
        for addr in found:
            reason = forbidden_address(addr)
            if reason:
                hint = "" if reason == "a cloud metadata address" else _NAME_HINT
                raise ForbiddenURI(f"{shown}: {host!r} resolves to {reason} ({addr}){hint}")
        return found

    def admit(self, address: str, port: int) -> None:
        """The last check before ``connect()``: ``ForbiddenURI`` unless ``address`` is allowed."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if self.exempt(str(ip), port) or (str(ip), port) in self._granted:
            return
        reason = forbidden_address(ip)
        if reason:
            raise ForbiddenURI(f"refusing to connect to {ip} port {port}: {reason}")

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """aiohttp's ``socket_factory``: ``admit`` the peer, then create the socket."""
        family, type_, proto, _name, sockaddr = addr_info
        self.admit(str(sockaddr[0]), int(sockaddr[1]))
        return socket.socket(family=family, type=type_, proto=proto)
