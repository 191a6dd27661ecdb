"""Read the signature → gate → prestage → verify → install → flip → persist: one path for
init and sidecar.

``Publisher.adopt`` takes a ``Resolution`` and either publishes it (returning the new pointer) or
raises, leaving what was published untouched. It is two halves: ``prepare`` (the signature gate,
then the download and verification into a staging directory of its own) may take long and may be
cancelled at any point — a deadline, a newer registry answer — leaving nothing behind;
``commit`` (install, flip, LKG, garbage collection) is local and short, and is never abandoned
half-way, so two commits never race on the volume. Blocking filesystem work runs in a thread so
the sidecar's status server keeps answering during a large install.

After the flip everything is best effort: the flip is the commit point, so a full or locked node
directory (the node LKG cannot be written) or a failed garbage collection is a warning carried in
``Adopted.warnings``, never a failure of a version that is already served.

The signature gate runs before any weight is downloaded: an MLflow model's ``MLmodel`` is read
first, through the store that holds it (``stage.mlmodel``). The registry claim behind each
published version is recorded beside its pointer (``Store.write_claim``) and carried forward
when a registry confirms it (``model.revision``).
"""

from __future__ import annotations

import asyncio
import errno
import shutil
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pointercache.base.blocking import abandon_after
from pointercache.base.clock import age_seconds, utcnow
from pointercache.base.log import log
from pointercache.base.redact import redact_text, redact_uri
from pointercache.errors import PointercacheError, SignatureMismatch, StoreError
from pointercache.model.candidate import DEFAULT_SELECTOR, Selector
from pointercache.model.pointer import Pointer
from pointercache.model.revision import Claim, carried_forward
from pointercache.resolve.chain import Resolution
from pointercache.stage.fetchers import FetchOptions, Progress
from pointercache.stage.mlmodel import with_signature
from pointercache.stage.prestage import CACHE_LOCK_WAIT, Staged, prestage
from pointercache.volume import layout
from pointercache.volume.cas import NodeCache
from pointercache.volume.lkg import NodeLKG
from pointercache.volume.store import Store

if TYPE_CHECKING:
    from pointercache.model.signature import SignatureGate
    from pointercache.sync.wiring import Parts


SEEN_REFRESH = 300.0
"""Seconds after which a registry's confirmation of the unchanged served version is written
again (``registry_seen_at`` of ``pointer.json`` and the node LKG)."""


@dataclass(frozen=True, slots=True)
class Adopted:
    """A version that is installed on the volume (and published unless prefetched)."""

    pointer: Pointer
    version_dir: Path
    reused: bool
    """True when the version was already installed (no download)."""
    warnings: tuple[str, ...] = ()
    """What went wrong after the flip (node LKG not written, garbage not collected)."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A candidate ready to install: verified bytes in staging, or a version installed already."""

    resolution: Resolution
    existing: Path | None = None
    """An installed version with the same digest (nothing was downloaded)."""
    staging: Path | None = None
    """The staging directory that holds ``staged`` (removed by ``commit`` or ``discard``)."""
    staged: Staged | None = None


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

    async def prepare(
        self,
        resolution: Resolution,
        *,
        progress: Progress | None = None,
        lock_wait: float = CACHE_LOCK_WAIT,
    ) -> Prepared:
        """Read the signature, gate, download and verify ``resolution`` into staging; nothing
        published changes.

        May be cancelled at any point: the staging directory is removed. ``progress`` also hears
        the download's progress; ``lock_wait`` bounds the wait for another process's download
        of the same digest (``stage.prestage``).
        """
        resolution = await self.signed(resolution)
        self.check_signature(resolution)
        cand = resolution.candidate
        if cand.digest:
            existing = await asyncio.to_thread(self.store.find, cand.model, cand.digest)
            if existing is not None:
                return Prepared(resolution, existing=existing)
        staging = await asyncio.to_thread(self.store.new_staging_dir)
        try:
            staged = await prestage(
                cand,
                staging,
                fetch=self.fetch,
                cache=self.cache,
                progress=progress,
                lock_wait=lock_wait,
            )
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            raise
        return Prepared(resolution, staging=staging, staged=staged)

    async def discard(self, prepared: Prepared) -> None:
        """Remove what ``prepare`` staged (when it will not be committed)."""
        if prepared.staging is not None:
            await asyncio.to_thread(shutil.rmtree, prepared.staging, True)

    async def install(self, resolution: Resolution) -> Adopted:
        """Stage, verify and install ``resolution`` without publishing it."""
        return await self.install_prepared(await self.prepare(resolution))

    async def install_prepared(self, prepared: Prepared) -> Adopted:
        """Install what ``prepare`` staged (or reuse the installed version), not published."""
        resolution = prepared.resolution
        try:
            if prepared.existing is not None:
                old = await asyncio.to_thread(Pointer.read, prepared.existing / layout.POINTER)
                pointer = _pointer(resolution, old.digest, old.size_bytes)
                # Same version: a pointer rewrite. Same bytes under another version: hard links.
                version_dir = await asyncio.to_thread(
                    self.store.install_from, prepared.existing, pointer
                )
                await asyncio.to_thread(self.store.write_claim, version_dir, resolution.claim)
                return Adopted(pointer, version_dir, reused=True)
            staged = prepared.staged
            assert staged is not None
            pointer = _pointer(resolution, staged.digest, staged.size_bytes)
            version_dir = await asyncio.to_thread(self.store.install, staged.path, pointer)
            await asyncio.to_thread(self.store.write_claim, version_dir, resolution.claim)
            return Adopted(pointer, version_dir, reused=False)
        finally:
            await self.discard(prepared)

    async def commit(self, prepared: Prepared, *, settle_within: float | None = None) -> Adopted:
        """Install what ``prepare`` staged, flip ``current`` to it, then persist the LKG and
        collect garbage (best effort, see the module docstring).

        ``settle_within`` bounds the work after the flip (seconds; a node lock held elsewhere
        waits up to ``volume.lkg.LOCK_WAIT``): past it the flip stands and a warning says the
        node LKG may not be written.
        """
        adopted = await self.install_prepared(prepared)
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
        try:
            warnings = await abandon_after(settle_within, self._after_publish, adopted.pointer)
        except TimeoutError:
            warning = f"node LKG and garbage collection not done within {settle_within:g}s"
            log.warning("after-publish-abandoned", reason=warning)
            warnings = [warning]
        return replace(adopted, warnings=tuple(warnings))

    async def adopt(self, resolution: Resolution, *, progress: Progress | None = None) -> Adopted:
        """``prepare`` then ``commit``: publish ``resolution`` or raise, leaving the volume as
        it was."""
        return await self.commit(await self.prepare(resolution, progress=progress))

    def _after_publish(self, pointer: Pointer) -> list[str]:
        warnings: list[str] = []
        if self.lkg is not None and pointer.source == "registry":
            warnings += self._write_lkg(pointer)
        return warnings + self.collect(pointer)

    def collect(self, current: Pointer | None = None) -> list[str]:
        """Garbage-collect the store, keeping ``current``, ``protect``, ``holds`` and LKGs.

        Returns the warnings (a failed collection is one: the version is served already).
        """
        warnings: list[str] = []
        protect: set[str] = {*self.protect, *(d for hold in self.holds for d in hold())}
        if current is not None:
            protect.add(current.digest)
        if self.lkg is not None:
            protect |= self.lkg.referenced_digests()
        try:
            removed = self.store.gc(protect)
        except StoreError as exc:
            log.warning("gc-failed", error=exc)
            warnings.append(f"garbage collection failed: {exc}")
        else:
            if removed:
                log.info("gc", removed=[p.name for p in removed])
        return warnings

    def _write_lkg(self, pointer: Pointer) -> list[str]:
        """Persist the node LKG; a failure is a warning (the version is served already)."""
        assert self.lkg is not None
        try:
            self.lkg.write(pointer, self.selector)
        except (OSError, StoreError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
                why = f"{errno.errorcode[exc.errno]} ({exc.strerror})"
            reason = redact_text(f"node LKG not written: {why}")
            log.warning("lkg-write-failed", model=pointer.model, reason=reason)
            return [reason]
        return []

    async def confirm(
        self, pointer: Pointer, held: Claim | None, offered: Claim
    ) -> tuple[Pointer, Claim]:
        """A registry named the served version again: record its provenance and claim.

        ``held`` is the claim behind the served version, ``offered`` the confirming answer's;
        the new claim is ``model.revision.carried_forward`` (forward with the same registry,
        replaced by another's). Returns the (possibly unchanged) pointer and claim.

        Nothing changed but the time: ``registry_seen_at`` in ``pointer.json`` and the node LKG
        is rewritten at most every ``SEEN_REFRESH`` seconds, so readers of those files (the pod
        annotation, ``pointercache fleet``) see a bounded staleness without a disk write per poll.
        """
        claim = carried_forward(held, offered)
        now = utcnow()
        updated = pointer.with_provenance("registry", offered.registry, registry_seen_at=now)
        updated = replace(updated, revision=claim.revision)
        version_dir = await asyncio.to_thread(self.store.current_dir)
        if version_dir is None:
            return pointer, claim
        same_source = pointer.source == "registry" and pointer.source_detail == offered.registry
        unchanged = same_source and updated.revision == pointer.revision and claim == held
        seen = age_seconds(pointer.registry_seen_at)
        if unchanged and seen is not None and 0 <= seen < SEEN_REFRESH:
            return pointer, claim
        await asyncio.to_thread(self.store.update_pointer, version_dir, updated)
        await asyncio.to_thread(self.store.write_claim, version_dir, claim)
        if self.lkg is not None:
            await asyncio.to_thread(self._write_lkg, updated)
        log.info(
            "confirmed", version=pointer.version, registry=offered.registry, revision=claim.revision
        )
        return updated, claim


__all__ = ["Adopted", "Prepared", "Publisher", "SignatureMismatch"]
