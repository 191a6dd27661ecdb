"""URIs that name local things: ``file://`` paths and ``configmap://`` references.

Both are parsed strictly, once, where a setting or an answer enters; a malformed one is a
``ConfigError`` naming it (redacted).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from pointercache.base.redact import redact_uri
from pointercache.errors import ConfigError

_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
"""A Kubernetes namespace: an RFC 1123 DNS label (at most 63 characters)."""
_NAME_RE = re.compile(r"^[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$")
"""A ConfigMap name: an RFC 1123 DNS subdomain (at most 253 characters)."""


def file_path(uri: str) -> Path:
    """The absolute path of a ``file://`` URI; ``ConfigError`` if it has a host or query."""
    parts = _split(uri)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        raise ConfigError(f"{redact_uri(uri)}: expected file:///absolute/path")
    if parts.query or parts.fragment:
        raise ConfigError(f"{redact_uri(uri)}: a file URI takes no query or fragment")
    path = Path(unquote(parts.path))
    if not path.is_absolute() or ".." in path.parts:
        raise ConfigError(f"{redact_uri(uri)}: expected an absolute path without '..'")
    return path


def configmap_ref(uri: str) -> tuple[str, str]:
    """``configmap://namespace/name`` → (namespace, name); ``ConfigError`` otherwise."""
    parts = _split(uri)
    namespace, name = parts.netloc, parts.path.strip("/")
    if (
        parts.scheme != "configmap"
        or not _NAMESPACE_RE.match(namespace)
        or not _NAME_RE.match(name)
        or parts.query
        or parts.fragment
    ):
        raise ConfigError(f"registry {uri!r}: expected configmap://NAMESPACE/NAME")
    return namespace, name


def _split(uri: str) -> SplitResult:
    try:
        return urlsplit(uri)
    except ValueError as exc:  # "http://[1.2.3.4]/", an unclosed "[": not a URI at all
        raise ConfigError(f"{redact_uri(uri)}: not a parseable URI ({exc})") from None


def configmap_target(text: str) -> tuple[str, str]:
    """``namespace/name`` (the ``--lkg-configmap`` value) → (namespace, name)."""
    namespace, sep, name = text.partition("/")
    if not sep:
        raise ConfigError(f"--lkg-configmap {text!r}: expected NAMESPACE/NAME")
    try:
        return configmap_ref(f"configmap://{namespace}/{name}")
    except ConfigError:
        raise ConfigError(f"--lkg-configmap {text!r}: expected NAMESPACE/NAME") from None
