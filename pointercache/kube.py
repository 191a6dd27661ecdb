"""The Kubernetes adapter: the only module that imports ``kubernetes`` (lazily, on first call).

Everything else in pointercache talks to the API through ``KubeClient``, which

- builds its configuration from a ``KubeConfig``: in-cluster (service account), a kubeconfig file,
  or an explicit API URL (``kubectl proxy``, tests);
- passes objects in and out as plain JSON dicts, so no generated model leaks out of this module;
- translates every failure by HTTP status into the ``KubeError`` branch of ``pointercache.errors``
  (404 ``KubeNotFound``, 409 ``KubeConflict``, 401/403 ``KubeForbidden``, 429/5xx/timeouts/refused
  ``KubeUnavailable``); 410 Gone is ``Gone``, which only watch code sees and answers by re-listing.

The client is blocking (urllib3); async callers run it in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import orjson

from pointercache.errors import (
    ConfigError,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
)

MERGE_PATCH = "application/merge-patch+json"
_EXTRA_PREFIX = "kube."


class Gone(KubeError):
    """410: the resourceVersion a watch asked for is too old; re-list and watch again."""


@dataclass(frozen=True, slots=True)
class KubeConfig:
    """How to reach the API server; built once by the entrypoint."""

    in_cluster: bool = False
    """Use the pod's service account (the CLI sets it when KUBERNETES_SERVICE_HOST is set)."""
    kubeconfig: Path | None = None
    """Kubeconfig file when not in cluster (None: the client's default, ~/.kube/config)."""
    context: str | None = None
    """Kubeconfig context (None: the current context)."""
    host: str | None = None
    """Explicit API URL without credentials (``kubectl proxy``, tests); wins over the rest."""
    request_timeout: float = 5.0
    """Seconds one API call may take (read timeout); watches use their own, longer one."""
    connect_timeout: float = 2.0
    """Seconds to establish a connection to the API server."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **fields: Any) -> KubeConfig:
        """In-cluster when ``environ`` (passed in by the CLI) has KUBERNETES_SERVICE_HOST."""
        return cls(in_cluster=bool(environ.get("KUBERNETES_SERVICE_HOST")), **fields)

    def to_extra(self) -> dict[str, str]:
        """Encode as ``SourceOptions.extra`` entries (``kube.*`` keys) for the ConfigMap source."""
        extra = {
            "kube.in_cluster": "true" if self.in_cluster else "false",
            "kube.request_timeout": str(self.request_timeout),
            "kube.connect_timeout": str(self.connect_timeout),
        }
        for key in ("kubeconfig", "context", "host"):
            value = getattr(self, key)
            if value is not None:
                extra[_EXTRA_PREFIX + key] = str(value)
        return extra

    @classmethod
    def from_extra(cls, extra: Mapping[str, str]) -> KubeConfig:
        """Decode ``kube.*`` entries of ``SourceOptions.extra`` (absent keys keep defaults)."""
        get = extra.get
        try:
            return cls(
                in_cluster=get("kube.in_cluster", "false").lower() in {"1", "true", "yes"},
                kubeconfig=Path(get("kube.kubeconfig", "")) if get("kube.kubeconfig") else None,
                context=get("kube.context") or None,
                host=get("kube.host") or None,
                request_timeout=float(get("kube.request_timeout", "5")),
                connect_timeout=float(get("kube.connect_timeout", "2")),
            )
        except ValueError as exc:
            raise ConfigError(f"kube settings: {exc}") from exc


class WatchEvent(NamedTuple):
    """One event of a watch stream: ADDED, MODIFIED, DELETED or BOOKMARK."""

    type: str
    object: dict[str, Any]
    resource_version: str | None


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


def _library_errors() -> tuple[type[BaseException], ...]:
    import urllib3
    from kubernetes.client.exceptions import ApiException

    return (ApiException, urllib3.exceptions.HTTPError, OSError)


def _build_api_client(config: KubeConfig) -> Any:
    from kubernetes.client.api_client import ApiClient
    from kubernetes.client.configuration import Configuration
    from kubernetes.config.config_exception import ConfigException
    from urllib3.util.retry import Retry

    cfg = Configuration()
    try:
        if config.host:
            cfg.host = config.host
        elif config.in_cluster:
            from kubernetes.config.incluster_config import load_incluster_config

            load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            from kubernetes.config.kube_config import load_kube_config

            load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(config.kubeconfig) if config.kubeconfig else None,
                context=config.context,
                client_configuration=cfg,
            )
    except (ConfigException, OSError, ValueError) as exc:
        raise ConfigError(f"kubernetes configuration: {exc}") from exc
    # Retry connection set-up, and idempotent calls once on a dropped keep-alive connection;
    # callers own every other retry and their backoff.
    cfg.retries = Retry(total=2, connect=2, read=1, status=0, redirect=0, raise_on_status=False)
    return ApiClient(cfg)


def _path(namespace: str, plural: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/{plural}"
    return f"{path}/{quote(name, safe='')}" if name else path


class KubeClient:
    """Blocking, thread-safe access to the few API calls pointercache makes (JSON dicts).

    Requests go through the kubernetes client's ``ApiClient`` (configuration, credentials and
    token refresh, TLS, connection pool) with plain JSON bodies: the generated per-call models
    are skipped, which keeps the first call fast and the payloads exactly as written here.
    """

    def __init__(self, config: KubeConfig | None = None) -> None:
        self.config = config or KubeConfig()
        self._client: Any = None
        self._lock = threading.Lock()

    def _api_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = _build_api_client(self.config)
            return self._client

    def prepare(self) -> None:
        """Import the kubernetes package and load the configuration now (about a second, once).

        Callers with a tight timeout per call (registry sources) run this outside the timeout.
        """
        self._api_client()

    def close(self) -> None:
        """Close pooled connections (the client can be used again afterwards)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.rest_client.pool_manager.clear()
            client.close()

    def _send(
        self,
        what: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | None] | None = None,
        body: dict[str, Any] | None = None,
        content_type: str | None = None,
        read_timeout: float | None = None,
    ) -> Any:
        """Send one request; return the raw urllib3 response of a 2xx, else raise KubeError."""
        from kubernetes.client.exceptions import ApiException

        client = self._api_client()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        try:
            request = client.param_serialize(
                method,
                path,
                query_params=params,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = client.call_api(
                *request,
                _request_timeout=(
                    self.config.connect_timeout,
                    read_timeout or self.config.request_timeout,
                ),
            )
            if not 200 <= resp.status <= 299:  # noqa: PLR2004
                resp.read()
                raise ApiException.from_response(http_resp=resp, body=None, data=None)
        except _library_errors() as exc:
            raise translate(exc, what) from exc
        return resp.response

    def _json(self, what: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        resp = self._send(what, method, path, **kwargs)
        try:
            body = resp.data
        except _library_errors() as exc:
            raise translate(exc, what) from exc
        finally:
            resp.release_conn()
        try:
            data = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError as exc:
            raise KubeUnavailable(f"{what}: the answer is not JSON") from exc
        if not isinstance(data, dict):
            raise KubeUnavailable(f"{what}: the answer is not a JSON object")
        return data

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any]:
        """GET a ConfigMap (``KubeNotFound`` if absent)."""
        return self._json(
            f"get configmap {namespace}/{name}", "GET", _path(namespace, "configmaps", name)
        )

    def list_configmaps(
        self,
        namespace: str,
        *,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """LIST ConfigMaps; return the items and the list's resourceVersion."""
        data = self._json(
            f"list configmaps {namespace}",
            "GET",
            _path(namespace, "configmaps"),
            query={"fieldSelector": field_selector},
        )
        return list(data.get("items") or []), (data.get("metadata") or {}).get("resourceVersion")

    def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a ConfigMap (``KubeConflict`` if one with that name exists)."""
        name = (body.get("metadata") or {}).get("name")
        return self._json(
            f"create configmap {namespace}/{name}",
            "POST",
            _path(namespace, "configmaps"),
            body=body,
        )

    def replace_configmap(
        self,
        namespace: str,
        name: str,
        body: dict[str, Any],
    ) -> dict[str, Any]:
        """PUT a ConfigMap; with ``metadata.resourceVersion`` set, 409 means it moved on."""
        return self._json(
            f"replace configmap {namespace}/{name}",
            "PUT",
            _path(namespace, "configmaps", name),
            body=body,
        )

    def patch_pod(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """JSON merge-patch a pod (RFC 7386: ``null`` deletes a key)."""
        return self._json(
            f"patch pod {namespace}/{name}",
            "PATCH",
            _path(namespace, "pods", name),
            body=patch,
            content_type=MERGE_PATCH,
        )

    def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a core/v1 Event."""
        return self._json(
            f"create event in {namespace}", "POST", _path(namespace, "events"), body=body
        )

    def list_pods(
        self,
        namespace: str,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """LIST pods of a namespace matching a label selector."""
        data = self._json(
            f"list pods {namespace}",
            "GET",
            _path(namespace, "pods"),
            query={"labelSelector": label_selector or None},
        )
        return list(data.get("items") or [])

    def watch_configmaps(
        self,
        namespace: str,
        *,
        field_selector: str | None,
        resource_version: str | None,
        timeout_seconds: int,
    ) -> WatchStream:
        """Open a watch of ConfigMaps from ``resource_version`` (``Gone`` if too old)."""
        what = f"watch configmaps {namespace}"
        resp = self._send(
            what,
            "GET",
            _path(namespace, "configmaps"),
            query={
                "watch": "true",
                "allowWatchBookmarks": "true",
                "fieldSelector": field_selector,
                "resourceVersion": resource_version,
                "timeoutSeconds": str(timeout_seconds),
            },
            read_timeout=timeout_seconds + 15.0,
        )
        return WatchStream(resp, what)


class WatchStream:
    """An open watch response: iterate for events; ``stop()`` from any thread ends it."""

    def __init__(self, resp: Any, what: str) -> None:
        self._resp = resp
        self._what = what
        self._stopped = False

    def stop(self) -> None:
        """Unblock the reading thread by shutting the socket down (safe from another thread)."""
        self._stopped = True
        with contextlib.suppress(AttributeError, OSError):  # already closed
            self._resp.shutdown()

    def __iter__(self) -> Iterator[WatchEvent]:
        buf = b""
        try:
            for chunk in self._resp.stream(8192, decode_content=True):
                buf += chunk
                while (end := buf.find(b"\n")) >= 0:
                    line, buf = buf[:end], buf[end + 1 :]
                    event = self._event(line)
                    if event is not None:
                        yield event
            event = self._event(buf)
            if event is not None:
                yield event
        except _library_errors() as exc:
            if not self._stopped:
                raise translate(exc, self._what) from exc
        finally:
            self._resp.close()
            self._resp.release_conn()

    def _event(self, line: bytes) -> WatchEvent | None:
        if not line.strip():
            return None
        try:
            raw = orjson.loads(line)
            kind, obj = raw["type"], raw["object"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise KubeUnavailable(f"{self._what}: malformed watch event") from exc
        if kind == "ERROR":
            code = int(obj.get("code") or 0)
            raise status_error(code, f"{self._what}: {code} {obj.get('reason', '')}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        return WatchEvent(str(kind), obj, rv)


_default: KubeClient | None = None
_default_lock = threading.Lock()


def api(config: KubeConfig | None = None) -> KubeClient:
    """Return a process-wide client for ``config`` (created on first use)."""
    global _default  # noqa: PLW0603 - one connection pool per process
    with _default_lock:
        if _default is None or (config is not None and _default.config != config):
            _default = KubeClient(config)
        return _default
