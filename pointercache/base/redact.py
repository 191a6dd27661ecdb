"""Remove credentials from anything pointercache writes or shows: an allowlist, not a blocklist.

``redact_uri`` keeps a URI's scheme, host, port and path and removes everything that can carry a
secret unless it is known to be harmless (git-sync's ``redactURL`` does the same for its
repository URL):

- **user info** always becomes ``***`` (``https://***@host/``);
- **query parameters** are kept only when the name is in ``SAFE_QUERY_KEYS`` and the value is a
  short plain token (``SAFE_VALUE``); every other parameter — ``X-Amz-Signature``, ``jwt``,
  ``pwd``, ``pass``, ``code``, ``session``, ``hmac``, a bare token without ``=`` or any name
  nobody thought of — is dropped, and one ``<redacted>`` marks that something was;
- **path parameters** (``;jsessionid=…`` after a path segment, RFC 3986 §3.3) are replaced by
  ``;<redacted>``;
- the **fragment** is dropped.

The result is stable: redacting a redacted URI changes nothing, so a redacted URI can be compared
with the redaction of a fresh one (``pointercache.model.revision``). ``redact_text`` applies the
same to every URI inside free text (error messages, log values) and hides ``Authorization``
values.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

MARK = "<redacted>"
"""What stands where something was removed."""
SAFE_QUERY_KEYS = frozenset(
    {
        "versionId",  # S3 object version
        "generation",  # GCS object generation
        "alt",  # GCS JSON API: alt=media
        "version",
        "revision",
        "ref",
        "format",
    }
)
"""Query parameters shown as they are: they select an object, they never authorise a request."""
SAFE_VALUE = re.compile(r"[A-Za-z0-9._~-]{1,128}")
"""A kept parameter's value must look like this (short, no separators or encodings)."""

_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_URI_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*:/[^\s'\"]*")


def _query(query: str) -> str:
    kept: list[str] = []
    dropped = False
    for pair in query.split("&"):
        key, sep, value = pair.partition("=")
        if sep and key in SAFE_QUERY_KEYS and SAFE_VALUE.fullmatch(value):
            kept.append(pair)
        elif pair:
            dropped = True
    if dropped:
        kept.append(MARK)
    return "&".join(kept)


def _path(path: str) -> str:
    if ";" not in path:
        return path
    return "/".join(
        f"{seg.split(';', 1)[0]};{MARK}" if ";" in seg else seg for seg in path.split("/")
    )


def redact_uri(uri: str) -> str:
    """Return ``uri`` without user info, secret-bearing parameters or fragment (see above)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable uri>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return urlunsplit(SplitResult(parts.scheme, netloc, _path(parts.path), _query(parts.query), ""))


def redact_text(text: str) -> str:
    """Redact URIs (``scheme:/…``) and authorization values inside free text (error messages)."""
    text = _BEARER.sub(lambda m: m.group(1) + " " + MARK, text)
    return _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)
