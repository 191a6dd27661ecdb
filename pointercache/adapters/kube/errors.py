"""Kubernetes API failures translated, by HTTP status, into the ``KubeError`` branch.

404 is ``KubeNotFound``, 409 ``KubeConflict``, 401/403 ``KubeForbidden``, 408/425/429/5xx,
timeouts and refused connections ``KubeUnavailable``; 410 Gone is ``Gone``, which only watch
code sees and answers by re-listing. ``kubernetes`` and ``urllib3`` are imported only when an
error is handled.
"""

from __future__ import annotations

from typing import Any

import orjson

from pointercache.adapters.http import StatusKind, classify_status
from pointercache.errors import (
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
)


class Gone(KubeError):
    """410: the resourceVersion a watch asked for is too old; re-list and watch again."""


_SPECIAL: dict[int, type[KubeError]] = {
    0: KubeUnavailable,  # no response at all
    409: KubeConflict,  # a stale resourceVersion, or created meanwhile
    410: Gone,  # a watch's resourceVersion is too old
}
_BY_KIND: dict[StatusKind, type[KubeError]] = {
    StatusKind.NOT_FOUND: KubeNotFound,
    StatusKind.UNAVAILABLE: KubeUnavailable,
    StatusKind.DENIED: KubeForbidden,
    StatusKind.REFUSED: KubeError,
}


def status_error(status: int, message: str) -> KubeError:
    """Return the ``KubeError`` subclass for an HTTP status (0: no response at all).

    409 and 410 mean something of their own in the Kubernetes API; every other status is
    classified by the shared table (``adapters.http.classify_status``).
    """
    kind = _SPECIAL.get(status) or _BY_KIND[classify_status(status)]
    return kind(message, status)


def translate(exc: BaseException, what: str) -> KubeError:
    """Translate a kubernetes/urllib3/socket error into the ``KubeError`` branch, by status."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        return status_error(status, f"{what}: {status} {_api_message(exc)}")
    return KubeUnavailable(f"{what}: {type(exc).__name__}")


def _api_message(exc: Any) -> str:
    try:
        body = orjson.loads(exc.body or b"")
        return str(body.get("reason") or "") + (
            f" ({body['message']})" if body.get("message") else ""
        )
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return str(exc.reason or "")


def library_errors() -> tuple[type[BaseException], ...]:
    """The exception types a kubernetes client call may raise, for ``except ... translate``."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    return (ApiException, urllib3.exceptions.HTTPError, OSError)
