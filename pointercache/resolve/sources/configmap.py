"""Registry source ``configmap://namespace/name``: a manifest kept in a ConfigMap, watched.

The ConfigMap holds one manifest (DESIGN §5) per model in the data key ``<model>.json``; a
ConfigMap that serves a single model may use the key ``manifest.json`` instead (``<model>.json``
wins when both exist). The manifest's ``model`` field must name the requested model.

``changes()`` starts one watch (list, then watch from the list's resourceVersion) in a thread: a
change arrives as an event, never by polling. After a disconnect or the server's watch timeout the
watch resumes from the last resourceVersion it saw (bookmarks included); when the server answers
410 Gone (that version was compacted) it lists again and resumes from there. Errors are retried with
a capped, jittered backoff; meanwhile ``resolve()`` falls back to a GET bounded by the source
timeout, so a stale cache is never served as fresh.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from pointercache.adapters.kube.client import Gone, KubeClient, WatchStream, api
from pointercache.adapters.retry import Backoff
from pointercache.base.log import log
from pointercache.errors import (
    KubeError,
    KubeNotFound,
    NotFound,
    SourceUnavailable,
)
from pointercache.model import manifest
from pointercache.model.candidate import Candidate, Selector
from pointercache.model.uris import configmap_ref
from pointercache.resolve.sources import SourceOptions
from pointercache.volume import layout

SINGLE_KEY = "manifest.json"
WATCH_TIMEOUT_SECONDS = 300
"""Server-side watch timeout; the watch is re-opened (from the last resourceVersion) after it."""


def manifest_bytes(obj: dict[str, Any], model: str) -> bytes:
    """Return the manifest of ``model`` from a ConfigMap object; ``NotFound`` without one.

    The key is ``<layout.disk_name(model)>.json`` (``recommender.json``; a name that is not a
    valid key, like ``Credit Risk``, gets its derived name), else ``manifest.json``.
    """
    data = obj.get("data") or {}
    key = f"{layout.disk_name(model)}.json"
    text = data.get(key, data.get(SINGLE_KEY))
    if not isinstance(text, str):
        meta = obj.get("metadata") or {}
        raise NotFound(
            f"configmap {meta.get('namespace')}/{meta.get('name')}: no key {key} or {SINGLE_KEY}"
        )
    return text.encode()


class ConfigMapSource:
    """A manifest in a ConfigMap; implements ``Source`` and ``WatchableSource``.

    The API client comes from ``client``, else from ``options.kube`` (a client of its own),
    else it is the process-wide ``kube.api()`` client.
    """

    def __init__(
        self,
        uri: str,
        options: SourceOptions,
        *,
        client: KubeClient | None = None,
    ) -> None:
        self.namespace, self.configmap = configmap_ref(uri)
        self.name = f"configmap://{self.namespace}/{self.configmap}"
        self._options = options
        own = client is None and options.kube is not None
        self._owns_client = own
        self._client = client or (KubeClient(options.kube) if options.kube is not None else api())
        self._watcher: ConfigMapWatcher | None = None
        self._bypass_once = False
        # Import kubernetes and load credentials now, not inside the first timed resolve().
        self._client.prepare()

    @property
    def live(self) -> bool:
        """True while the watch is connected and its copy of the ConfigMap is current."""
        return self._watcher is not None and self._watcher.snapshot()[0]

    def invalidate(self) -> None:
        """The next resolve reads the ConfigMap from the API, not the watched copy."""
        self._bypass_once = True

    async def resolve(self, model: str, selector: Selector) -> Candidate:
        """Select from the watched copy while the watch is live, else from a bounded GET."""
        live, obj = self._watcher.snapshot() if self._watcher else (False, None)
        if self._bypass_once:
            self._bypass_once, live = False, False
        if not live:
            obj = await self._get()
        if obj is None:
            raise NotFound(f"{self.name}: no such ConfigMap")
        data = manifest_bytes(obj, model)
        parsed = manifest.parse(data, model=model, max_bytes=self._options.max_manifest_bytes)
        return parsed.select(selector, registry=self.name)

    async def _get(self) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(self._options.timeout):
                return await asyncio.to_thread(
                    self._client.get_configmap, self.namespace, self.configmap
                )
        except KubeNotFound:
            return None
        except KubeError as exc:
            raise SourceUnavailable(f"{self.name}: {exc}") from exc
        except TimeoutError as exc:
            raise SourceUnavailable(f"{self.name}: no answer in {self._options.timeout}s") from exc

    async def changes(self) -> AsyncIterator[None]:
        """Yield after the first sync and after each change of the ConfigMap's data."""
        if self._watcher is None:
            self._watcher = ConfigMapWatcher(self._client, self.namespace, self.configmap)
            self._watcher.start()
        watcher = self._watcher
        changed = asyncio.Event()
        watcher.subscribe(asyncio.get_running_loop(), changed)
        try:
            while True:
                await changed.wait()
                changed.clear()
                if watcher.stopped:
                    return
                yield None
        finally:
            watcher.unsubscribe(changed)

    async def aclose(self) -> None:
        """Stop the watch thread and release connections."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            await asyncio.to_thread(watcher.join, 5.0)
        if self._owns_client:
            self._client.close()


class ConfigMapWatcher:
    """List-then-watch of one ConfigMap in a daemon thread; notifies asyncio subscribers."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        *,
        timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
        max_backoff: float = 10.0,
    ) -> None:
        self._client = client
        self.namespace, self.name = namespace, name
        self._selector = f"metadata.name={name}"
        self._timeout_seconds = timeout_seconds
        self._max_backoff = max_backoff
        self._lock = threading.Lock()
        self._obj: dict[str, Any] | None = None
        self._synced = False
        self._live = False
        self._stop = threading.Event()
        self._stream: WatchStream | None = None
        self._rv: str | None = None
        """Where the next watch resumes (None: list first); only the watch thread writes it."""
        self._subscribers: dict[asyncio.Event, asyncio.AbstractEventLoop] = {}
        self._thread = threading.Thread(
            target=self._run, name=f"watch-{namespace}/{name}", daemon=True
        )

    @property
    def stopped(self) -> bool:
        """True once ``stop()`` was called."""
        return self._stop.is_set()

    def start(self) -> None:
        """Start the watch thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; unblocks a pending read and wakes every subscriber."""
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.stop()
        self._notify()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end."""
        if self._thread.is_alive():
            self._thread.join(timeout)

    def snapshot(self) -> tuple[bool, dict[str, Any] | None]:
        """(live, object): live means the cache is synced and the watch is connected."""
        with self._lock:
            return self._live and self._synced, self._obj

    def subscribe(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        """Set ``event`` (in ``loop``) after every change."""
        with self._lock:
            self._subscribers[event] = loop

    def unsubscribe(self, event: asyncio.Event) -> None:
        """Stop notifying ``event``."""
        with self._lock:
            self._subscribers.pop(event, None)

    def _notify(self) -> None:
        with self._lock:
            targets = list(self._subscribers.items())
        for event, loop in targets:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                self.unsubscribe(event)

    def _update(self, obj: dict[str, Any] | None) -> None:
        with self._lock:
            before = None if self._obj is None else self._obj.get("data")
            after = None if obj is None else obj.get("data")
            changed = not self._synced or before != after or (self._obj is None) != (obj is None)
            self._obj, self._synced = obj, True
        if changed:
            log.info(
                "configmap-changed",
                configmap=f"{self.namespace}/{self.name}",
                resource_version=(obj or {}).get("metadata", {}).get("resourceVersion"),
            )
            self._notify()

    def _set_live(self, live: bool) -> None:
        with self._lock:
            self._live = live

    def _run(self) -> None:
        backoff = Backoff(initial=0.2, maximum=self._max_backoff)
        failures = 0
        while not self._stop.is_set():
            fresh = self._rv is None
            try:
                if self._rv is None:
                    self._rv = self._relist()
                self._follow()
                failures = 0
            except Gone as exc:
                log.info("configmap-watch-expired", configmap=f"{self.namespace}/{self.name}")
                self._rv = None
                if fresh:  # Gone right after a list: do not hammer the API server
                    failures += 1
                    self._back_off(exc, backoff.delay(failures))
            except KubeError as exc:  # resumes from self._rv: the last version seen
                failures += 1
                self._back_off(exc, backoff.delay(failures))
        self._set_live(False)

    def _back_off(self, exc: KubeError, delay: float) -> None:
        self._set_live(False)
        log.warning(
            "configmap-watch-failed",
            configmap=f"{self.namespace}/{self.name}",
            error=exc,
            retry_in=round(delay, 2),
        )
        self._stop.wait(delay)

    def _relist(self) -> str | None:
        items, rv = self._client.list_configmaps(self.namespace, field_selector=self._selector)
        self._update(
            next((o for o in items if o.get("metadata", {}).get("name") == self.name), None)
        )
        return rv

    def _follow(self) -> None:
        """Watch from ``self._rv`` until the stream ends, advancing it with every event."""
        stream = self._client.watch_configmaps(
            self.namespace,
            field_selector=self._selector,
            resource_version=self._rv,
            timeout_seconds=self._timeout_seconds,
        )
        self._stream = stream
        if self._stop.is_set():
            stream.stop()
        self._set_live(True)
        try:
            for event in stream:
                self._rv = event.resource_version or self._rv
                if event.type == "BOOKMARK":
                    continue
                if event.object.get("metadata", {}).get("name") != self.name:
                    continue
                self._update(None if event.type == "DELETED" else event.object)
        finally:
            self._stream = None
