"""The artifact URI allowlist: which URIs a registry may make us fetch.

A URI from a registry is untrusted input. ``AllowList.check`` refuses, with ``ForbiddenURI``:

- anything outside the configured prefixes (``--allow``), matched by component: scheme, host,
  effective port, then whole path segments (``s3://models`` does not allow ``s3://models-evil``,
  ``/data/models`` does not allow ``/data/models2``);
- user info (``https://good@evil``), fragments, backslashes, whitespace, control or non-ASCII
  characters, ``.``/``..`` or empty path segments, encoded separators (``%2f``, ``%5c``, ``%00``)
  and percent-encoded traversal (``%2e%2e``, ``%252e%252e``), non-canonical hosts and ports;
- for hosts we connect to (http, https, ``*+http(s)``, any scheme but the storage-only ones):
  loopback, link-local, unspecified, multicast, reserved and cloud metadata addresses, in any
  spelling (decimal, octal, hex, short IPv4; IPv4-mapped, 6to4, Teredo, NAT64 IPv6), and the
  hostnames that resolve to them. With ``resolve_dns`` every address the name resolves to is
  checked. Such a host is only allowed when an ``--allow`` prefix names it literally (the
  address itself, or ``localhost``); a DNS name that merely resolves there stays refused.

An empty allowlist allows any URI that passes the rest. ``s3://``, ``file://`` and the other
storage schemes never touch DNS, so checking them is cheap.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from pointercache.base.redact import redact_uri
from pointercache.errors import ConfigError, FetchUnavailable, ForbiddenURI
from pointercache.model.uris import canonical_uri

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence


class AllowPolicy(Protocol):
    """Decides whether a URI may be fetched (``AllowList``, or ``AllowAll`` for trusted URIs)."""

    def check(self, uri: str) -> None:
        """Raise ``ForbiddenURI`` unless ``uri`` is allowed."""
        ...


class AllowAll:
    """The policy for trusted, operator-given URIs (pinned) and tests of upper layers."""

    def check(self, uri: str) -> None:
        """Allow everything but an empty URI."""
        if not uri:
            raise ForbiddenURI("empty artifact URI")


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, "int | None"], "Sequence[str]"]
"""``(host, port) -> addresses``; ``resolve`` (getaddrinfo) unless one is injected."""

STORAGE_SCHEMES = frozenset({"s3", "gs", "file", "memory", "configmap", "runs", "models"})
"""Schemes whose "host" is a bucket or a name, never a network peer: no address checks."""
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
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CLASSES = (
    ("is_loopback", "a loopback address"),
    ("is_link_local", "a link-local address"),
    ("is_unspecified", "an unspecified address"),
    ("is_multicast", "a multicast address"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_BAD_DECODED = re.compile(r"[\x00-\x1f\x7f\\]")  # an encoded space is a fine file name
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
_IPV4 = re.compile(r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")
_NUMERIC_LABEL = re.compile(r"\d+|0x[0-9a-f]*")
_ENCODED_BAD = ("%2f", "%5c", "%00")
MAX_URI = 8192


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int | None
    segments: tuple[str, ...]

    @property
    def connects(self) -> bool:
        return bool(self.host) and self.scheme not in STORAGE_SCHEMES


def _embedded(ip: IPAddress) -> Iterator[IPAddress]:
    """The address itself and every IPv4 address an IPv6 form carries."""
    yield ip
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            yield ip.ipv4_mapped
        if ip.sixtofour is not None:
            yield ip.sixtofour
        if ip.teredo is not None:
            yield from ip.teredo
        low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip in _NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):  # NAT64, IPv4-compatible
            yield low


def forbidden_address(addr: str | IPAddress) -> str | None:
    """Why ``addr`` must not be fetched from (loopback, metadata...), or None if it may."""
    ip = ipaddress.ip_address(addr) if isinstance(addr, str) else addr
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


def _literal(host: str, shown: str) -> IPAddress | None:
    """The IP a host spells, refusing non-canonical numeric spellings (0x7f.1, 2130706433)."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise ForbiddenURI(f"{shown}: malformed IPv6 host") from None
    if _IPV4.fullmatch(host):
        return ipaddress.IPv4Address(host)
    if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        raise ForbiddenURI(f"{shown}: non-canonical numeric host {host!r}")
    return None


def _path_segments(path: str, shown: str) -> tuple[str, ...]:
    text = path
    for _ in range(4):  # each round undoes one layer of percent-encoding
        if any(bad in text.lower() for bad in _ENCODED_BAD):
            raise ForbiddenURI(f"{shown}: encoded separator or NUL in path")
        if any(seg in {".", ".."} for seg in text.split("/")):
            raise ForbiddenURI(f"{shown}: '.' or '..' path segment")
        if _BAD_DECODED.search(text):
            raise ForbiddenURI(f"{shown}: backslash or control character in path")
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    else:
        raise ForbiddenURI(f"{shown}: path is percent-encoded too many times")
    segs = path.split("/")
    inner = segs[1:-1] if path.startswith("/") else segs[:-1]
    if "" in inner:
        raise ForbiddenURI(f"{shown}: empty path segment ('//')")
    return tuple(unquote(s) for s in segs if s)


def parse_target(uri: str) -> _Target:
    """Split and validate ``uri``; raise ``ForbiddenURI`` naming the rule it breaks."""
    shown = redact_uri(uri) if uri.isascii() else "<non-ascii uri>"
    if not uri or len(uri) > MAX_URI or not uri.isascii() or _BAD_CHARS.search(uri):
        raise ForbiddenURI(f"{shown}: empty, too long, or has whitespace/backslash/control chars")
    parts = split_uri(uri)
    if not _SCHEME.fullmatch(parts.scheme) or "#" in uri:
        raise ForbiddenURI(f"{shown}: missing scheme, or a fragment")
    if "@" in parts.netloc:
        raise ForbiddenURI(f"{shown}: user info in URI (put credentials in files, not URIs)")
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        raise ForbiddenURI(f"{shown}: malformed port") from None
    ip = _literal(host, shown) if host else None
    if ip is None and host and (len(host) > 253 or not _NAME.fullmatch(host)):  # noqa: PLR2004
        raise ForbiddenURI(f"{shown}: malformed host")
    canonical = f"[{host}]" if isinstance(ip, ipaddress.IPv6Address) else host
    canonical += f":{port}" if port is not None else ""
    if parts.netloc.lower() != canonical:
        raise ForbiddenURI(f"{shown}: non-canonical host or port")
    if parts.scheme == "file" and (host or not parts.path.startswith("/")):
        raise ForbiddenURI(f"{shown}: file URIs must be file:///absolute/path")
    if parts.scheme in _DEFAULT_PORTS and not host:
        raise ForbiddenURI(f"{shown}: no host")
    if port is None:
        port = _DEFAULT_PORTS.get(parts.scheme.rsplit("+", 1)[-1])
    return _Target(parts.scheme, host, port, _path_segments(parts.path, shown))


def split_uri(uri: str) -> SplitResult:
    """``urlsplit(uri)``, with ``ForbiddenURI`` for what it cannot parse (``http://[1.2.3.4]/``,
    an unclosed ``[``: Python raises ``ValueError`` there, RFC 3986 §3.2.2)."""
    try:
        return urlsplit(uri)
    except ValueError as exc:
        raise ForbiddenURI(f"{redact_uri(uri)}: not a parseable URI ({exc})") from None


def _named_local(host: str) -> bool:
    """True when ``host`` itself spells a loopback/metadata target (so naming it is explicit)."""
    if host in LOCAL_NAMES or host.endswith(".localhost"):
        return True
    ip = _literal(host, host) if host else None
    return ip is not None and forbidden_address(ip) is not None


class AllowList:
    """Implements ``fetchers.AllowPolicy`` for ``--allow`` prefixes (see the module docstring)."""

    def __init__(
        self,
        prefixes: Sequence[str],
        *,
        resolve_dns: bool = True,
        resolver: Resolver | None = None,
    ) -> None:
        self.resolve_dns = resolve_dns
        self.resolver: Resolver = resolver or resolve
        self.prefixes: tuple[str, ...] = tuple(prefixes)
        self._targets: list[_Target] = []
        for prefix in self.prefixes:
            try:
                self._targets.append(parse_target(canonical_uri(prefix)))
            except ForbiddenURI as exc:
                raise ConfigError(f"--allow {redact_uri(prefix)!r}: {exc}") from None
            if "?" in prefix:
                raise ConfigError(f"--allow {redact_uri(prefix)!r}: a query string in a prefix")

    def _match(self, target: _Target) -> _Target | None:
        for p in self._targets:
            if (p.scheme, p.host, p.port) == (target.scheme, target.host, target.port) and (
                target.segments[: len(p.segments)] == p.segments
            ):
                return p
        return None

    def check(self, uri: str) -> None:
        """Raise ``ForbiddenURI`` unless ``uri`` may be fetched (``FetchUnavailable`` on DNS).

        ``uri`` is checked in its canonical form (``model.uris.canonical_uri``): a raw space in
        an S3 key or an HTTP path is fine, and matches a prefix written either way.
        """
        target = parse_target(canonical_uri(uri))
        match = self._match(target)
        if self._targets and match is None:
            raise ForbiddenURI(f"{redact_uri(uri)}: not under any --allow prefix")
        if not target.connects or (match is not None and _named_local(match.host)):
            return
        self._check_host(target, redact_uri(uri))

    def _check_host(self, target: _Target, shown: str) -> None:
        host = target.host
        if host in LOCAL_NAMES or host.endswith(".localhost"):
            hint = _hint(target, None) if host == "localhost" else ""
            raise ForbiddenURI(f"{shown}: {host!r} is a local or metadata host{hint}")
        ip = _literal(host, shown)
        if ip is not None:
            addresses = [ip]
        elif self.resolve_dns:
            try:
                addresses = [ipaddress.ip_address(a) for a in self.resolver(host, target.port)]
            except (OSError, UnicodeError) as exc:
                raise FetchUnavailable(f"{shown}: cannot resolve {host!r}: {exc}") from exc
        else:
            return
        for addr in addresses:
            reason = forbidden_address(addr)
            if reason:
                raise ForbiddenURI(f"{shown}: {host!r} is {reason} ({addr}){_hint(target, ip)}")

    def check_redirect(self, current: str, location: str) -> str:
        """Validate one redirect hop like a first request; return the absolute next URI."""
        return check_redirect(self, current, location)


def _hint(target: _Target, literal: IPAddress | None) -> str:
    """How to allow a loopback or private-address origin on purpose (an MLflow on this host).

    Naming the host literally in ``--allow`` lets it through; a DNS name that resolves there
    never does, so then the hint is to use the address itself.
    """
    if literal is not None and forbidden_address(literal) == "a cloud metadata address":
        return ""
    host = f"[{target.host}]" if ":" in target.host else target.host
    port = f":{target.port}" if target.port is not None else ""
    prefix = f"{target.scheme}://{host}{port}/"
    if literal is None and target.host != "localhost":
        return (
            "; a name that resolves there is never allowed: use the address itself in the"
            " registry URI and name it in --allow"
        )
    return f"; to fetch from it on purpose, add --allow {prefix}"


def resolve(host: str, port: int | None) -> list[str]:
    """Every address ``host`` resolves to (``socket.getaddrinfo``; blocking)."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    # sockaddr[0] may carry an IPv6 scope ("fe80::1%eth0"); the scope is not part of the address
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


def check_redirect(policy: AllowPolicy, current: str, location: str) -> str:
    """Resolve ``location`` against ``current``, refuse https→http, then ``policy.check`` it."""
    try:
        target = urljoin(current, location)
    except ValueError:
        raise ForbiddenURI(f"{redact_uri(current)}: redirect to an unparseable Location") from None
    if split_uri(current).scheme == "https" and split_uri(target).scheme != "https":
        raise ForbiddenURI(f"{redact_uri(target)}: redirect from https to another scheme")
    policy.check(target)
    return target
