"""Remove credentials and presigned query strings from anything shown or logged.

A URI keeps its scheme, host, port and path; user info becomes ``***`` and the query string is
dropped when it carries anything that looks like a signature or a token (git-sync's redactURL does
the same for its repository URL).
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

_SECRET_QUERY = re.compile(
    r"(x-amz-|signature|token|credential|key|sig=|se=|sp=|sv=|auth|password|secret)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")


def redact_uri(uri: str) -> str:
    """Return ``uri`` without user info or a secret-bearing query string."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable uri>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query and _SECRET_QUERY.search(query):
        query = "<redacted>"
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, ""))


def redact_text(text: str) -> str:
    """Redact URIs and authorization values inside free text (error messages)."""
    text = _BEARER.sub(lambda m: m.group(1) + " <redacted>", text)
    return re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+", lambda m: redact_uri(m.group(0)), text)
