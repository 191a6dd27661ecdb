"""The Kubernetes adapter: ``KubeClient``, the one way pointercache talks to the API server.

Everything else in pointercache talks to the API through ``KubeClient``, which

- builds its configuration from a ``KubeConfig`` (``kube_config``): in-cluster (service account),
  a kubeconfig file, or an explicit API URL (``kubectl proxy``, tests);
- passes objects in and out as plain JSON dicts, so no generated model leaks out of this module;
- translates every failure by HTTP status into the ``KubeError`` branch of ``pointercache.errors``
  (``kube_errors``: 404 ``KubeNotFound``, 409 ``KubeConflict``, 401/403 ``KubeForbidden``,
  429/5xx/timeouts/refused ``KubeUnavailable``); 410 Gone is ``Gone``, which only watch code sees
  and answers by re-listing;
- opens watches whose events ``WatchStream`` (``kube_watch``) reads.

Only this module and ``kube_errors`` import ``kubernetes``, lazily, on first call; every name the
rest of pointercache uses is importable from here. The client is blocking (urllib3); async
callers run it in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from pointercache.adapters.kube.config import KubeConfig
from pointercache.adapters.kube.errors import Gone, library_errors, status_error, translate
from pointercache.adapters.kube.watch import WatchEvent, WatchStream
from pointercache.errors import ConfigError, KubeUnavailable

MERGE_PATCH = "application/merge-patch+json"


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
        except library_errors() as exc:
            raise translate(exc, what) from exc
        return resp.response

    def _json(self, what: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        seconds = kwargs.get("read_timeout") or self.config.request_timeout
        resp = self._send(what, method, path, **kwargs)
        try:
            body = read_within(resp, seconds, what)
        except library_errors() as exc:
            resp.close()  # a half-read answer: the connection must not go back to the pool
            raise translate(exc, what) from exc
        except KubeUnavailable:
            resp.close()
            raise
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


_default: KubeClient | None = None
_default_lock = threading.Lock()


def api(config: KubeConfig | None = None) -> KubeClient:
    """Return a process-wide client for ``config`` (created on first use)."""
    global _default  # noqa: PLW0603 - one connection pool per process
    with _default_lock:
        if _default is None or (config is not None and _default.config != config):
            _default = KubeClient(config)
        return _default


__all__ = [
    "MERGE_PATCH",
    "Gone",
    "KubeClient",
    "KubeConfig",
    "WatchEvent",
    "WatchStream",
    "api",
    "status_error",
    "translate",
]


MAX_ANSWER_BYTES = 64 << 20
"""The largest API answer read (a list of ConfigMaps of 1 MiB each, with room to spare)."""


def read_within(resp: Any, seconds: float, what: str) -> bytes:
    """The body of a urllib3 response, read a socket read at a time within ``seconds`` in all.

    ``resp.data`` reads until the end, so an answer that trickles a byte at a time holds the
    thread for as long as the server likes, every socket read under the read timeout. Reading
    with ``read1`` (urllib3 ≥ 2) and a deadline bounds the whole answer: ``KubeUnavailable``
    when it is not complete in time or is over ``MAX_ANSWER_BYTES``.
    """
    read = getattr(resp, "read1", None) or resp.read
    until = time.monotonic() + seconds
    chunks: list[bytes] = []
    got = 0
    while chunk := read(1 << 16):
        got += len(chunk)
        if got > MAX_ANSWER_BYTES:
            raise KubeUnavailable(f"{what}: the answer is over {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
        if time.monotonic() > until:
            raise KubeUnavailable(f"{what}: the answer was not complete within {seconds:g}s")
    return b"".join(chunks)
