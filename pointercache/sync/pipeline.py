"""Read the signature → gate → prestage → verify → install → flip → persist: one path for
init and sidecar.

``Publisher.adopt`` takes a ``Resolution`` and either publishes it (returning the new pointer) or
raises, leaving what was published untouched. The signature gate runs before any weight is
downloaded: an MLflow model's ``MLmodel`` is read first, through the store that holds it
(``stage.mlmodel``). The registry claim behind each published version is recorded beside its
pointer (``Store.write_claim``) and carried forward when a registry confirms it
(``model.revision``). Blocking filesystem work runs in a thread so the sidecar's status server
keeps answering during a large install.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pointercache.base.clock import utcnow
from pointercache.base.log import log
from pointercache.base.redact import redact_uri
from pointercache.errors import PointercacheError, SignatureMismatch
from pointercache.model.candidate import DEFAULT_SELECTOR, Selector
from pointercache.model.pointer import Pointer
from pointercache.model.revision import Claim, carried_forward
from pointercache.resolve.chain import Resolution
from pointercache.stage.fetchers import FetchOptions
from pointercache.stage.mlmodel import with_signature
from pointercache.stage.prestage import prestage
from pointercache.volume import layout
from pointercache.volume.cas import NodeCache
from pointercache.volume.lkg import NodeLKG
from pointercache.volume.store import Store

if TYPE_CHECKING:
    from pointercache.model.signature import SignatureGate
    from pointercache.sync.wiring import Parts


@dataclass(frozen=True, slots=True)
class Adopted:
    """A version that is installed on the volume (and published unless prefetched)."""

    pointer: Pointer
    version_dir: Path
    reused: bool
    """True when the version was already installed (no download)."""


def _pointer(resolution: Resolution, digest: str, size_bytes: int) -> Pointer:
    """The pointer a verified artifact of ``resolution`` gets (URI redacted)."""
    cand = resolution.candidate
    return Pointer(
        model=cand.model,
        version=cand.version,
        uri=redact_uri(cand.uri),
        digest=digest,
        size_bytes=size_bytes,
        revision=cand.revision,
        signature=cand.signature,
        source=resolution.source,
        source_detail=resolution.detail,
        resolved_at=utcnow(),
        registry_seen_at=resolution.registry_seen_at,
    )


class Publisher:
    """Turns resolutions into published versions on one store."""

    def __init__(
        self,
        store: Store,
        *,
        fetch: FetchOptions,
        lkg: NodeLKG | None = None,
        cache: NodeCache | None = None,
        gate: SignatureGate | None = None,
        selector: Selector = DEFAULT_SELECTOR,
    ) -> None:
        self.store = store
        self.fetch = fetch
        self.lkg = lkg
        self.cache = cache
        self.gate = gate
        self.selector = selector
        """The pod's selector: the node LKG entry written is this selector's."""
        self.protect: set[str] = set()
        """Digests garbage collection must keep besides the current one (a prefetched candidate)."""
        self.holds: list[Callable[[], Collection[str]]] = []
        """More digests to keep, asked at each collection (what the model container serves)."""

    @classmethod
    def for_parts(cls, parts: Parts) -> Publisher:
        """The publisher of a wired role (init container or sidecar)."""
        return cls(
            parts.store,
            fetch=parts.fetch,
            lkg=parts.lkg,
            cache=parts.cache,
            gate=parts.gate,
            selector=parts.target.selector,
        )

    async def signed(self, resolution: Resolution) -> Resolution:
        """``resolution`` with its model's signature read from its ``MLmodel`` (when the source
        left it to be read), for the gate and for ``pointer.json``.

        With the gate on, a failure to read it (a timeout, a 5xx) fails the candidate: it is
        never admitted unchecked. With the gate off, the signature is only information: such a
        failure is logged and the candidate goes on without one.
        """
        cand = resolution.candidate
        if cand.signature_from is None or cand.signature is not None:
            return resolution
        scratch = await asyncio.to_thread(self.store.new_staging_dir)
        try:
            signed = await with_signature(cand, self.fetch, scratch / "mlmodel")
        except PointercacheError as exc:
            if self.gate is not None:
                raise
            log.warning("mlmodel-unread", version=cand.version, error=exc)
            signed = replace(cand, signature_from=None)
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)
        return replace(resolution, candidate=signed)

    def check_signature(self, resolution: Resolution) -> None:
        """Raise ``SignatureMismatch`` if the candidate does not fit the serving code; log
        ``signature-unchecked`` once when the gate let an unsigned model through."""
        if self.gate is None:
            return
        warning = self.gate.check(resolution.candidate.signature)
        if warning:
            log.warning("signature-unchecked", version=resolution.candidate.version, reason=warning)

    async def install(self, resolution: Resolution) -> Adopted:
        """Read the signature, gate, stage, verify and install ``resolution`` (not published)."""
        resolution = await self.signed(resolution)
        self.check_signature(resolution)
        cand = resolution.candidate
        existing = self.store.find(cand.model, cand.digest) if cand.digest else None
        if existing is not None:
            old = await asyncio.to_thread(Pointer.read, existing / layout.POINTER)
            pointer = _pointer(resolution, old.digest, old.size_bytes)
            # Same version: a pointer rewrite. Same bytes under another version: hard links.
            version_dir = await asyncio.to_thread(self.store.install_from, existing, pointer)
            await asyncio.to_thread(self.store.write_claim, version_dir, resolution.claim)
            return Adopted(pointer, version_dir, reused=True)
        staging = await asyncio.to_thread(self.store.new_staging_dir)
        try:
            staged = await prestage(cand, staging, fetch=self.fetch, cache=self.cache)
            pointer = _pointer(resolution, staged.digest, staged.size_bytes)
            version_dir = await asyncio.to_thread(self.store.install, staged.path, pointer)
            await asyncio.to_thread(self.store.write_claim, version_dir, resolution.claim)
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
        return Adopted(pointer, version_dir, reused=False)

    async def adopt(self, resolution: Resolution) -> Adopted:
        """Install ``resolution``, flip ``current`` to it, persist the LKG and collect garbage."""
        adopted = await self.install(resolution)
        await asyncio.to_thread(self.store.publish, adopted.version_dir)
        log.info(
            "published",
            model=adopted.pointer.model,
            version=adopted.pointer.version,
            digest=adopted.pointer.digest,
            source=adopted.pointer.source,
            detail=adopted.pointer.source_detail,
            reused=adopted.reused,
        )
        await asyncio.to_thread(self._after_publish, adopted.pointer)
        return adopted

    def _after_publish(self, pointer: Pointer) -> None:
        if self.lkg is not None and pointer.source == "registry":
            self.lkg.write(pointer, self.selector)
        self.collect(pointer)

    def collect(self, current: Pointer | None = None) -> None:
        """Garbage-collect the store, keeping ``current``, ``protect``, ``holds`` and LKGs."""
        protect: set[str] = {*self.protect, *(d for hold in self.holds for d in hold())}
        if current is not None:
            protect.add(current.digest)
        if self.lkg is not None:
            protect |= self.lkg.referenced_digests()
        removed = self.store.gc(protect)
        if removed:
            log.info("gc", removed=[p.name for p in removed])

    async def confirm(
        self, pointer: Pointer, held: Claim | None, offered: Claim
    ) -> tuple[Pointer, Claim]:
        """A registry named the served version again: record its provenance and claim.

        ``held`` is the claim behind the served version, ``offered`` the confirming answer's;
        the new claim is ``model.revision.carried_forward`` (forward with the same registry,
        replaced by another's). Returns the (possibly unchanged) pointer and claim.
        """
        claim = carried_forward(held, offered)
        now = utcnow()
        updated = pointer.with_provenance("registry", offered.registry, registry_seen_at=now)
        updated = replace(updated, revision=claim.revision)
        version_dir = self.store.current_dir()
        if version_dir is None:
            return pointer, claim
        same_source = pointer.source == "registry" and pointer.source_detail == offered.registry
        if same_source and updated.revision == pointer.revision and claim == held:
            return pointer, claim
        await asyncio.to_thread(self.store.update_pointer, version_dir, updated)
        await asyncio.to_thread(self.store.write_claim, version_dir, claim)
        if self.lkg is not None:
            await asyncio.to_thread(self.lkg.write, updated, self.selector)
        log.info(
            "confirmed", version=pointer.version, registry=offered.registry, revision=claim.revision
        )
        return updated, claim


__all__ = ["Adopted", "Publisher", "SignatureMismatch"]
