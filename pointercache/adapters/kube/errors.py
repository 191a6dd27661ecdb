"""Kubernetes API failures translated, by HTTP status, into the ``KubeError`` branch.

404 is ``KubeNotFound``, 409 ``KubeConflict``, 401/403 ``KubeForbidden``, 408/429/5xx, timeouts
and refused connections ``KubeUnavailable``; 410 Gone is ``Gone``, which only watch code sees and
answers by re-listing. ``kubernetes`` and ``urllib3`` are imported only when an error is handled.
"""

from __future__ import annotations

from typing import Any

import orjson

from pointercache.errors import (
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
)


class Gone(KubeError):
    """410: the resourceVersion a watch asked for is too old; re-list and watch again."""


_BY_STATUS: dict[int, type[KubeError]] = {
    404: KubeNotFound,
    409: KubeConflict,
    410: Gone,
    401: KubeForbidden,
    403: KubeForbidden,
    0: KubeUnavailable,
    408: KubeUnavailable,
    429: KubeUnavailable,
}


def status_error(status: int, message: str) -> KubeError:
    """Return the ``KubeError`` subclass for an HTTP status (0: no response at all)."""
    kind = KubeUnavailable if status >= 500 else _BY_STATUS.get(status, KubeError)  # noqa: PLR2004
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
