"""The MLflow REST plumbing shared by the MLflow source: requests, limits, error mapping.

``MlflowRest`` sends GETs to ``<base>/api/2.0/...`` with the registry's credentials (read from
their files on each request), never follows redirects (a token must not travel to another host),
bounds every answer by ``max_answer_bytes``, and maps errors by MLflow
``error_code`` first and HTTP status second, never by message text.

Also here: ``read_signature``, a tiny reader for the ``signature:`` block of an ``MLmodel`` file
(YAML as MLflow writes it), so PyYAML is not a runtime dependency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from pointercache.adapters.http import (
    Credentials,
    client_session,
    client_timeout,
    read_limited,
    status_error,
)
from pointercache.errors import (
    InvalidManifest,
    NotFound,
    PointercacheError,
    SourceError,
    SourceUnavailable,
)

if TYPE_CHECKING:
    import aiohttp

API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "ENDPOINT_NOT_FOUND"})
_TRANSIENT = frozenset(
    {"TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED", "ABORTED"}
)
_DENIED = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED"})


def error_code(body: bytes) -> str:
    """The ``error_code`` of an MLflow error answer ("" if the body has none)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(parsed, dict) and isinstance(parsed.get("error_code"), str):
        return str(parsed["error_code"])
    return ""


def api_error(
    status: int, body: bytes, what: str, *, invalid: type[SourceError]
) -> PointercacheError:
    """Map an MLflow error answer by ``error_code`` (then HTTP status); message text is ignored.

    ``invalid`` is the error for ``INVALID_PARAMETER_VALUE``: ``NotFound`` where the parameter
    is the user's selector (no such alias, stage or version), ``InvalidManifest`` elsewhere.
    """
    code = error_code(body)
    if code in _NOT_FOUND:
        return NotFound(f"{what}: {code}")
    if code == "INVALID_PARAMETER_VALUE":
        return invalid(f"{what}: {code}")
    if code in _TRANSIENT:
        return SourceUnavailable(f"{what}: {code} (HTTP {status})")
    if code in _DENIED:
        return SourceError(f"{what}: access denied ({code})")
    return status_error(status, what)


class MlflowRest:
    """One aiohttp session to one tracking server (``base`` = scheme://host:port[/prefix]).

    aiohttp is imported when the first request is sent, not with this module.
    """

    def __init__(
        self,
        base: str,
        name: str,
        *,
        timeout: float,
        max_answer_bytes: int,
        credentials: Credentials,
    ) -> None:
        self.base = base
        self.name = name
        self.timeout = timeout
        """Seconds one request may take (connect and whole answer)."""
        self.max_answer_bytes = max_answer_bytes
        """Answers larger than this are refused (``InvalidManifest``)."""
        self.credentials = credentials
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = client_session(client_timeout(self.timeout))
        return self._session

    async def get(
        self,
        path: str,
        params: dict[str, str],
        *,
        max_bytes: int,
        invalid: type[SourceError] = NotFound,
        missing_ok: bool = False,
    ) -> bytes | None:
        """GET ``base + path`` with credentials, no redirects; None on 404 if ``missing_ok``."""
        headers = self.credentials.headers()
        async with self._client().get(
            self.base + path, params=params, headers=headers, allow_redirects=False
        ) as response:
            body = await read_limited(response, max_bytes, self.name, InvalidManifest)
            if response.status == 200:  # noqa: PLR2004
                return body
            if missing_ok and response.status == 404:  # noqa: PLR2004
                return None
            raise api_error(response.status, body, f"{self.name} {path}", invalid=invalid)

    async def call(
        self, endpoint: str, params: dict[str, str], *, invalid: type[SourceError] = NotFound
    ) -> dict[str, Any]:
        """Call a registry endpoint; a JSON object, or a ``SourceError`` mapped by error code."""
        limit = self.max_answer_bytes
        body = await self.get(f"{API}/{endpoint}", params, max_bytes=limit, invalid=invalid)
        return self._object(endpoint, body)

    async def _send_post(self, endpoint: str, payload: dict[str, Any]) -> tuple[int, bytes]:
        headers = self.credentials.headers()
        url = f"{self.base}{API}/{endpoint}"
        async with self._client().post(
            url, json=payload, headers=headers, allow_redirects=False
        ) as response:
            body = await read_limited(response, self.max_answer_bytes, self.name, InvalidManifest)
            return response.status, body

    async def post(
        self,
        endpoint: str,
        payload: dict[str, Any],
        *,
        invalid: type[SourceError] = InvalidManifest,
    ) -> dict[str, Any]:
        """POST JSON to a registry endpoint (MLflow REST API 2.0); the answer's JSON object.

        No redirects are followed; errors are mapped by ``error_code`` like ``call``.
        """
        status, body = await self._send_post(endpoint, payload)
        if status != 200:  # noqa: PLR2004
            raise api_error(status, body, f"{self.name} {endpoint}", invalid=invalid)
        return self._object(endpoint, body)

    async def post_unless_exists(
        self, endpoint: str, payload: dict[str, Any]
    ) -> dict[str, Any] | None:
        """``post`` a creation; None when MLflow answers ``RESOURCE_ALREADY_EXISTS`` (someone
        created it first), any other error mapped as by ``post``."""
        status, body = await self._send_post(endpoint, payload)
        if status == 200:  # noqa: PLR2004
            return self._object(endpoint, body)
        if error_code(body) == "RESOURCE_ALREADY_EXISTS":
            return None
        raise api_error(status, body, f"{self.name} {endpoint}", invalid=InvalidManifest)

    def _object(self, endpoint: str, body: bytes | None) -> dict[str, Any]:
        try:
            parsed = orjson.loads(body or b"")
        except orjson.JSONDecodeError as exc:
            raise InvalidManifest(f"{self.name} {endpoint}: answer is not JSON") from exc
        if not isinstance(parsed, dict):
            raise InvalidManifest(f"{self.name} {endpoint}: answer is not a JSON object")
        return parsed

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def registry_base(uri: str) -> str:
    """``mlflow+http(s)://host[:port][/prefix]`` → ``http(s)://host[:port][/prefix]``.

    ``ConfigError`` for another scheme, no host, user info, a query or a fragment (credentials
    belong in the token files, never in the URI).
    """
    from urllib.parse import urlsplit

    from pointercache.base.redact import redact_uri
    from pointercache.errors import ConfigError

    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in ("mlflow+http", "mlflow+https") or not parts.hostname:
        raise ConfigError(f"registry {redact_uri(uri)}: expected mlflow+http(s)://host[:port]")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            f"registry {redact_uri(uri)}: no user info, query or fragment (use the token file)"
        )
    return f"{scheme.removeprefix('mlflow+')}://{parts.netloc}{parts.path.rstrip('/')}"


def obj(value: object, what: str) -> dict[str, Any]:
    """``value`` if it is a JSON object, else ``InvalidManifest``."""
    if not isinstance(value, dict):
        raise InvalidManifest(f"MLflow answer: {what} is not an object")
    return value


def string(value: object, what: str) -> str:
    """``value`` if it is a non-empty string, else ``InvalidManifest``."""
    if not isinstance(value, str) or not value:
        raise InvalidManifest(f"MLflow answer: {what} is not a non-empty string")
    return value


def integer(value: object, what: str) -> int:
    """``value`` (an int or a string of digits) as a non-negative int, else ``InvalidManifest``."""
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if not text.isdigit():
        raise InvalidManifest(f"MLflow answer: {what} {value!r} is not a non-negative integer")
    return int(text)


def tags(obj: dict[str, Any]) -> dict[str, str]:
    """The ``tags`` of an MLflow entity as a mapping (a list of key/value pairs on the wire)."""
    tags = obj.get("tags") or []
    if isinstance(tags, dict):  # some servers answer a mapping
        return {str(k): str(v) for k, v in tags.items()}
    return {
        str(t.get("key")): str(t.get("value")) for t in tags if isinstance(t, dict) and "key" in t
    }


def read_signature(mlmodel: bytes) -> dict[str, Any] | None:
    """Read the top-level ``signature:`` block of an MLmodel file; None if absent or unreadable.

    Only the subset MLflow writes is understood: ``key: value`` lines two levels deep whose
    values are ``null`` or single/double-quoted or plain scalars folded over indented lines.
    The ``inputs``/``outputs``/``params`` values are JSON strings and are decoded.
    """
    try:
        lines = mlmodel.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return None
    try:
        start = lines.index("signature:")
    except ValueError:
        return None
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line and not line[0].isspace():
            break
        block.append(line)
    fields = _fields(block)
    if fields is None:
        return None
    result: dict[str, Any] = {}
    try:
        for key, lines in fields.items():
            text = _scalar(lines)
            result[key] = None if text is None else orjson.loads(text)
    except (ValueError, orjson.JSONDecodeError):
        return None
    return result if "inputs" in result else None


def _fields(block: list[str]) -> dict[str, list[str]] | None:
    """Split an indented block into ``key → lines of its value``; None if not that shape."""
    raw: dict[str, list[str]] = {}
    key = ""
    indent = None
    for line in block:
        if not line.strip():
            if key:
                raw[key].append("")
            continue
        depth = len(line) - len(line.lstrip(" "))
        if indent is None:
            indent = depth
        if depth == indent:
            key, sep, rest = line.strip().partition(":")
            if not sep:
                return None
            raw[key] = [rest.strip()]
        elif depth > indent and key:
            raw[key].append(line.strip())
        else:
            return None
    return raw


def _scalar(parts: list[str]) -> str | None:
    """Fold a YAML flow scalar's lines into its text; None for null; ValueError if unsupported."""
    text = " ".join(p for p in parts if p)  # YAML folds a line break into one space
    if text in ("", "null", "~", "Null", "NULL"):
        return None
    if len(text) >= 2 and text[0] == text[-1] == "'":  # noqa: PLR2004
        return text[1:-1].replace("''", "'")
    if len(text) >= 2 and text[0] == text[-1] == '"':  # noqa: PLR2004
        decoded = orjson.loads(text)
        if not isinstance(decoded, str):
            raise ValueError("not a string")
        return decoded
    if text[0] in "|>&*!'\"[{":  # block scalars, anchors, tags, flow collections
        raise ValueError("unsupported YAML scalar")
    return text
