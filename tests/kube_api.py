"""ConfigMaps with the API server's consistency rules, served by kmock on loopback.

kmock 0.8's ``KubernetesEmulator`` stores objects and streams watch events, but it does not do
what this project's ConfigMap code depends on: it never sets ``metadata.resourceVersion`` (lists
answer ``"..."``), its watch ignores the ``resourceVersion`` parameter (it always replays every
object as ADDED and never answers 410 Gone), it has no ``PUT`` (replace) and no optimistic
concurrency (a stale resourceVersion is not a 409), and it ignores field selectors. So ConfigMaps
are served here by a kmock reaction on a ``KubernetesScaffold`` (kmock's discovery and error
rendering) that keeps those rules: a global resourceVersion counter, an event history that a watch
resumes from, compaction that turns an old resourceVersion into 410 Gone (as an ERROR event, like
the API server, or as an HTTP 410 status), 409 on a stale replace or a duplicate create, and
``metadata.name`` field selectors. Pods and Events tests use kmock's emulator as it is.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import kmock
import pytest

from pointercache.adapters.kube.client import KubeClient, KubeConfig

CONFIGMAPS = kmock.resource("", "v1", "configmaps")
Key = tuple[str, str]


def status(code: int, reason: str, message: str = "") -> dict[str, Any]:
    """A metav1.Status body."""
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message or reason,
    }


class ConfigMapApi:
    """In-memory ConfigMaps with resourceVersions, served through a kmock reaction."""

    def __init__(self, handler: kmock.KubernetesScaffold, url: str) -> None:
        self.url = url
        self.rv = 1000
        self.objects: dict[Key, dict[str, Any]] = {}
        self.history: list[tuple[int, str, dict[str, Any]]] = []
        self.compacted_below = 0
        self.gone_as_status = False
        self.inject_conflicts = 0
        self.fail_watches = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.stored_revisions: dict[str, list[int]] = {}
        self._queues: list[asyncio.Queue[dict[str, Any] | None]] = []
        handler[CONFIGMAPS] << self._serve

    # ---- helpers for tests (run in the event loop, never over HTTP) ----
    def put(self, namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
        """Create or update a ConfigMap directly, as another client would."""
        key = (namespace, name)
        if key in self.objects:
            obj = copy.deepcopy(self.objects[key])
            obj["data"] = dict(data)
            return self._store(key, obj, "MODIFIED")
        obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": dict(data),
        }
        return self._store(key, obj, "ADDED")

    def disconnect_watches(self) -> None:
        """End every open watch stream (the client sees the connection close)."""
        for queue in list(self._queues):
            queue.put_nowait(None)

    def break_watches(self) -> None:
        """Fail every open watch mid-stream (kmock then streams an ERROR event with code 500)."""
        for queue in list(self._queues):
            queue.put_nowait({"type": "BREAK"})

    def bookmark(self) -> None:
        """Send a BOOKMARK with the current resourceVersion to every open watch."""
        event = {
            "type": "BOOKMARK",
            "object": {
                "kind": "ConfigMap",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.rv)},
            },
        }
        for queue in self._queues:
            queue.put_nowait(event)

    def compact(self) -> None:
        """Forget history: a watch from any resourceVersion older than the current one is Gone."""
        self.compacted_below = self.rv

    @property
    def open_watches(self) -> int:
        """How many watch streams are being served."""
        return len(self._queues)

    def count(self, action: str) -> int:
        """How many requests of ``action`` (list, watch, get, create, replace) arrived."""
        return sum(1 for a, _ in self.requests if a == action)

    def params(self, action: str) -> list[dict[str, str]]:
        """Query parameters of each request of ``action``, in order."""
        return [p for a, p in self.requests if a == action]

    # ---- state ----
    def _store(self, key: Key, obj: dict[str, Any], kind: str) -> dict[str, Any]:
        self.rv += 1
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self.rv)
        meta.setdefault("uid", f"uid-{key[0]}-{key[1]}")
        self.objects[key] = obj
        self.history.append((self.rv, kind, copy.deepcopy(obj)))
        for data_key, text in (obj.get("data") or {}).items():
            if data_key.endswith(".json"):
                self.stored_revisions.setdefault(data_key, []).append(
                    json.loads(text).get("revision")
                )
        event = {"type": kind, "object": copy.deepcopy(obj)}
        for queue in self._queues:
            queue.put_nowait(event)
        return obj

    # ---- HTTP ----
    async def _serve(self, request: kmock.Request) -> kmock.Response:
        ns, name, method = request.namespace or "", request.name, request.method.value
        params = dict(request.params)
        if method == "GET" and params.get("watch") == "true":
            self.requests.append(("watch", params))
            return self._watch(request, ns, _selected_name(params))
        if method == "GET" and name is None:
            self.requests.append(("list", params))
            wanted = _selected_name(params)
            items = [
                o
                for (n, m), o in sorted(self.objects.items())
                if n == ns and (wanted is None or m == wanted)
            ]
            return _ok(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMapList",
                    "metadata": {"resourceVersion": str(self.rv)},
                    "items": items,
                }
            )
        if method == "GET":
            self.requests.append(("get", params))
            obj = self.objects.get((ns, name or ""))
            return _ok(obj) if obj else _err(status(404, "NotFound", f"configmaps {name!r}"))
        if method == "POST":
            self.requests.append(("create", params))
            return self._create(ns, request.data)
        if method == "PUT" and name is not None:
            self.requests.append(("replace", params))
            return self._replace(ns, name, request.data)
        return _err(status(405, "MethodNotAllowed"))

    def _create(self, ns: str, body: dict[str, Any]) -> kmock.Response:
        key = (ns, body["metadata"]["name"])
        if key in self.objects:
            return _err(status(409, "AlreadyExists", f"configmaps {key[1]!r} already exists"))
        body["metadata"]["namespace"] = ns
        return _ok(self._store(key, body, "ADDED"), 201)

    def _replace(self, ns: str, name: str, body: dict[str, Any]) -> kmock.Response:
        current = self.objects.get((ns, name))
        if current is None:
            return _err(status(404, "NotFound", f"configmaps {name!r}"))
        if self.inject_conflicts > 0:
            self.inject_conflicts -= 1
            return _err(status(409, "Conflict", "injected conflict"))
        wanted = body.get("metadata", {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            return _err(status(409, "Conflict", "the object has been modified"))
        body["metadata"]["uid"] = current["metadata"]["uid"]
        return _ok(self._store((ns, name), body, "MODIFIED"))

    def _watch(self, request: kmock.Request, ns: str, name: str | None) -> kmock.Response:
        if self.fail_watches > 0:
            self.fail_watches -= 1
            return _err(status(503, "ServiceUnavailable", "etcd is having a moment"))
        since = request.params.get("resourceVersion")
        if since and int(since) < self.compacted_below and self.gone_as_status:
            return _err(status(410, "Expired", "too old resource version"))

        def matches(obj: dict[str, Any]) -> bool:
            meta = obj["metadata"]
            return meta["namespace"] == ns and (name is None or meta["name"] == name)

        if since and int(since) < self.compacted_below:
            backlog: list[dict[str, Any]] = [
                {"type": "ERROR", "object": status(410, "Expired", "too old resource version")}
            ]
            queue = None
        else:
            if since:
                backlog = [
                    {"type": t, "object": o}
                    for rv, t, o in self.history
                    if rv > int(since) and matches(o)
                ]
            else:
                backlog = [
                    {"type": "ADDED", "object": o} for o in self.objects.values() if matches(o)
                ]
            queue = asyncio.Queue()
            self._queues.append(queue)
        return kmock.Response(status=200, payload=self._stream(request, backlog, queue, matches))

    async def _stream(
        self,
        request: kmock.Request,
        backlog: list[dict[str, Any]],
        queue: asyncio.Queue[dict[str, Any] | None] | None,
        matches: Any,
    ) -> AsyncIterator[bytes | dict[str, Any]]:
        try:
            yield b""  # send the headers now, as the API server does
            for event in backlog:
                yield event
            while queue is not None:
                try:
                    event = await asyncio.wait_for(queue.get(), 0.2)
                except TimeoutError:
                    transport = request._raw_request.transport if request._raw_request else None
                    if transport is None or transport.is_closing():
                        return
                    continue
                if event is None:
                    return
                if event["type"] == "BREAK":
                    raise RuntimeError("the watch broke mid-stream")
                if event["type"] == "BOOKMARK" or matches(event["object"]):
                    yield event
        finally:
            if queue is not None and queue in self._queues:
                self._queues.remove(queue)


def _selected_name(params: dict[str, str]) -> str | None:
    selector = params.get("fieldSelector", "")
    return (
        selector.removeprefix("metadata.name=") if selector.startswith("metadata.name=") else None
    )


def _ok(body: dict[str, Any], code: int = 200) -> kmock.Response:
    return kmock.Response(status=code, payload=copy.deepcopy(body))


def _err(body: dict[str, Any]) -> kmock.Response:
    return kmock.Response(status=body["code"], payload=body)


@pytest.fixture
async def cmapi() -> AsyncIterator[ConfigMapApi]:
    """ConfigMaps with resourceVersions and watch resume, served by kmock on 127.0.0.1."""
    async with kmock.KubernetesScaffold() as handler, kmock.Server(handler) as server:
        api = ConfigMapApi(handler, str(server.url).rstrip("/"))
        yield api
        api.disconnect_watches()
        await asyncio.sleep(0)


@pytest.fixture
def make_client() -> Iterator[Callable[[str], KubeClient]]:
    """Build real kubernetes clients for a kmock URL; all are closed at the end."""
    clients: list[KubeClient] = []

    def make(url: str) -> KubeClient:
        client = KubeClient(KubeConfig(host=url, request_timeout=5.0))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def kmock_url(handler: kmock.RawHandler) -> str:
    """The base URL of a kmock handler's server, without the trailing slash."""
    return str(handler.url).rstrip("/")
