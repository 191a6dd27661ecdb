"""The artifact URI allowlist: which URIs a registry may make us fetch.

A URI from a registry is untrusted input. ``AllowList.check`` refuses, with ``ForbiddenURI``:

- anything outside the configured prefixes (``--allow``), matched by component: scheme, host,
  effective port, then whole path segments (``s3://models`` does not allow ``s3://models-evil``,
  ``/data/models`` does not allow ``/data/models2``);
- user info (``https://good@evil``), fragments, backslashes, whitespace, control or non-ASCII
  characters, ``.``/``..`` or empty path segments, also behind path parameters (``..;x``, the
  form servlet containers normalise to ``..``), encoded separators (``%2f``, ``%5c``, ``%00``)
  and percent-encoded traversal (``%2e%2e``, ``%252e%252e``), non-canonical hosts and ports;
- a ``file://`` URI from a **remote** registry (anything but a local ``file://`` manifest and
  the operator's pinned version, see ``Candidate.provenance``) unless an ``--allow`` prefix names
  that ``file://`` directory: a registry must not make us publish the pod's own files
  (``file:///proc/self/environ``);
- for hosts we connect to (http, https, ``*+http(s)``, any scheme but the storage-only ones):
  loopback, link-local, unspecified, multicast, reserved and cloud metadata addresses, in any
  spelling (decimal, octal, hex, short IPv4; IPv6 forms that embed an IPv4 address), and the
  names that always mean this machine (``localhost``). Such a host is only allowed when an
  ``--allow`` prefix names it literally (the address itself, or ``localhost``).

DNS names are **not** resolved here: ``AllowList.peers`` (an ``AddressPolicy``,
``pointercache.adapters.addresses``) resolves a name when the HTTP client connects, checks every
address of that one answer, and the client connects only to those addresses (no rebinding
between check and connect).

An empty allowlist allows any URI that passes the rest. ``s3://``, ``file://`` and the other
storage schemes never touch DNS.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from pointercache.adapters.addresses import (
    AddressPolicy,
    Resolver,
    forbidden_address,
    ip_literal,
)
from pointercache.base.redact import redact_uri
from pointercache.errors import ConfigError, ForbiddenURI
from pointercache.model.uris import canonical_uri

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pointercache.model.candidate import Provenance


class AllowPolicy(Protocol):
    """Decides whether a URI may be fetched (``AllowList``, or ``AllowAll`` for trusted URIs)."""

    @property
    def peers(self) -> AddressPolicy:
        """The peers an HTTP client may connect to (its resolver and socket factory use it)."""
        ...

    def check(self, uri: str) -> None:
        """Raise ``ForbiddenURI`` unless ``uri`` is allowed."""
        ...

    def scoped(self, provenance: Provenance) -> AllowPolicy:
        """This policy for the URIs of a candidate that came from a ``provenance`` source."""
        ...


@dataclass(frozen=True, slots=True)
class AllowAll:
    """The policy for trusted, operator-given URIs in tests of upper layers: any URI, any peer."""

    peers: AddressPolicy = field(default_factory=lambda: AddressPolicy(open=True))

    def check(self, uri: str) -> None:
        """Allow everything but an empty URI."""
        if not uri:
            raise ForbiddenURI("empty artifact URI")

    def scoped(self, provenance: Provenance) -> AllowAll:
        """The same policy: everything is trusted."""
        del provenance
        return self


STORAGE_SCHEMES = frozenset({"s3", "gs", "file", "memory", "configmap", "runs", "models"})
"""Schemes whose "host" is a bucket or a name, never a network peer: no address checks."""
_DEFAULT_PORTS = {"http": 80, "https": 443}
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


def _literal(host: str, shown: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
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
        # a path parameter (";jsessionid=...") does not make "..;x" a name: servers drop it
        names = [seg.split(";", 1)[0] for seg in text.split("/")]
        if any(name in {".", ".."} for name in names):
            raise ForbiddenURI(f"{shown}: '.' or '..' path segment")
        if any(seg.startswith(";") for seg in text.split("/")):
            raise ForbiddenURI(f"{shown}: path parameter without a segment name")
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


class AllowList:
    """Implements ``AllowPolicy`` for ``--allow`` prefixes (see the module docstring).

    ``resolver`` replaces ``getaddrinfo`` for the peers' DNS lookups (tests). ``local`` is the
    scope of a candidate from a local registry (``scoped("local")``): ``file://`` needs no prefix.
    """

    def __init__(
        self,
        prefixes: Sequence[str],
        *,
        resolver: Resolver | None = None,
        local: bool = False,
    ) -> None:
        self.prefixes: tuple[str, ...] = tuple(prefixes)
        self.local = local
        self._targets: list[_Target] = []
        for prefix in self.prefixes:
            try:
                self._targets.append(parse_target(canonical_uri(prefix)))
            except ForbiddenURI as exc:
                raise ConfigError(f"--allow {redact_uri(prefix)!r}: {exc}") from None
            if "?" in prefix:
                raise ConfigError(f"--allow {redact_uri(prefix)!r}: a query string in a prefix")
        named = [(t.host, t.port) for t in self._targets if t.connects]
        self._peers = AddressPolicy(named, resolver=resolver)

    @property
    def peers(self) -> AddressPolicy:
        """The address policy of connections: forbidden classes, except hosts a prefix names."""
        return self._peers

    def scoped(self, provenance: Provenance) -> AllowList:
        """This allowlist for a candidate from a ``provenance`` registry (same peers)."""
        if (provenance == "local") == self.local:
            return self
        scoped = copy.copy(self)  # shares the prefixes and the peers (their granted addresses)
        scoped.local = provenance == "local"
        return scoped

    def _match(self, target: _Target) -> _Target | None:
        for p in self._targets:
            if (p.scheme, p.host, p.port) == (target.scheme, target.host, target.port) and (
                target.segments[: len(p.segments)] == p.segments
            ):
                return p
        return None

    def check(self, uri: str) -> None:
        """Raise ``ForbiddenURI`` unless ``uri`` may be fetched (no DNS lookup: see ``peers``).

        ``uri`` is checked in its canonical form (``model.uris.canonical_uri``): a raw space in
        an S3 key or an HTTP path is fine, and matches a prefix written either way.
        """
        target = parse_target(canonical_uri(uri))
        match = self._match(target)
        shown = redact_uri(uri)
        if self._targets and match is None:
            raise ForbiddenURI(f"{shown}: not under any --allow prefix")
        if target.scheme == "file" and match is None and not self.local:
            raise ForbiddenURI(
                f"{shown}: a file:// artifact named by a remote registry or an LKG"
                " (name its directory in --allow to accept it)"
            )
        if target.connects:
            try:
                self._peers.check_host(target.host, target.port, shown)
            except ForbiddenURI as exc:
                raise ForbiddenURI(f"{exc}{_hint(target)}") from None

    def check_redirect(self, current: str, location: str) -> str:
        """Validate one redirect hop like a first request; return the absolute next URI."""
        return check_redirect(self, current, location)


def _hint(target: _Target) -> str:
    """How to allow a loopback or private-address origin on purpose (an MLflow on this host).

    Naming the host literally in ``--allow`` lets it through (``AddressPolicy``); the metadata
    addresses and names get no suggestion. A DNS name that resolves to such an address is
    refused when connecting, with its own hint (``AddressPolicy.addresses``).
    """
    literal = ip_literal(target.host)
    if literal is None and target.host != "localhost":
        return ""
    if literal is not None and forbidden_address(literal) == "a cloud metadata address":
        return ""
    host = f"[{target.host}]" if ":" in target.host else target.host
    port = f":{target.port}" if target.port is not None else ""
    return f"; to fetch from it on purpose, add --allow {target.scheme}://{host}{port}/"


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
