"""URIs: the percent-encoding rule of artifact URIs, ``file://`` paths, ``configmap://`` refs.

Artifact URIs (``canonical_uri``): a URI is percent-encoded (RFC 3986) — except an ``s3://``
key, which is literal, as the AWS CLI, boto3 and MLflow take it. Registries write both kinds
raw (MLflow records ``s3://bucket/0/run/artifacts/credit model``), so the canonical form
encodes what a URI cannot hold raw and is what the allowlist checks and HTTP sends.

``file://`` paths and ``configmap://`` references are parsed strictly, once, where a setting or
an answer enters; a malformed one is a ``ConfigError`` naming it (redacted).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import SplitResult, quote, unquote, urlsplit

from pointercache.base.redact import redact_uri
from pointercache.errors import ConfigError

_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
"""A Kubernetes namespace: an RFC 1123 DNS label (at most 63 characters)."""
_NAME_RE = re.compile(r"^[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$")
"""A ConfigMap name: an RFC 1123 DNS subdomain (at most 253 characters)."""


_SUB_DELIMS = "!$&'()*+,;="
_KEPT = "/-._~:@" + _SUB_DELIMS
"""Characters a URI path holds as they are (RFC 3986 ``pchar`` and ``/``), besides letters and
digits."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LITERAL_KEY_SCHEMES = frozenset({"s3"})
"""Schemes whose path is a literal object key (``%`` is an ordinary character)."""


def canonical_uri(uri: str) -> str:
    """``uri`` with its path (and query) percent-encoded as RFC 3986 requires.

    - ``s3://bucket/key``: the key is literal (``s3://b/credit model/`` is the key
      ``credit model/``; ``s3://b/a%20b`` is the key ``a%20b``), so every character outside
      letters, digits and ``/-._~:@!$&'()*+,;=`` is encoded, ``%`` included:
      ``s3://b/credit%20model/``. This is the form the allowlist checks (apply it once, to the
      URI as the registry gave it); the S3 fetcher reads the literal key from that URI.
    - anything else (``http(s)://``, ``mlflow-artifacts+http(s)://``, ``file://``): the URI is
      already a URI, so existing ``%XX`` escapes are kept as they are (never decoded, never
      encoded twice: idempotent) and only what a URI cannot hold raw is encoded as UTF-8: a
      space becomes ``%20``, ``é`` becomes ``%C3%A9``. HTTP sends this form byte for byte;
      ``file://`` paths are decoded again when read.

    Scheme, user info and host are left alone (the allowlist refuses what is wrong with them);
    control characters are encoded too, and refused after decoding by the allowlist.
    """
    if _CONTROL.search(uri):
        return uri  # left for the allowlist to refuse (urlsplit would drop tabs and newlines)
    try:
        parts = urlsplit(uri)
    except ValueError:  # a bracketed host Python cannot parse: left for the allowlist to refuse
        return uri
    if parts.scheme.lower() in _LITERAL_KEY_SCHEMES:
        path = quote(parts.path, safe=_KEPT)
        query = parts.query
    else:
        path = quote(parts.path, safe=_KEPT + "%")
        query = quote(parts.query, safe=_KEPT + "%?")
    head = uri[: len(parts.scheme) + 1] if parts.scheme else ""
    if uri[len(head) :].startswith("//"):
        head += "//" + parts.netloc
    tail = f"?{query}" if "?" in uri.split("#", 1)[0] else ""
    tail += f"#{parts.fragment}" if "#" in uri else ""
    return head + path + tail


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
