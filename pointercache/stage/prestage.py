"""Prestage a candidate: bring its artifact into staging, verified, ready for ``Store.install``.

Order: the node cache by digest (copied, never linked, then the copy verified) → the origin URI
through the scheme's fetcher → archive extraction when the URI names an archive →
``tree_digest`` → verification against the candidate's promised digest and size → a copy into
the node cache (the served tree never shares an inode with the node directory). A mismatch
raises ``IntegrityError`` and the staged bytes are deleted; a damaged cache entry is deleted and
the artifact fetched again. A candidate without a digest is verified by computing one: the
``Staged`` result (and so the pointer) records what was actually staged.

For an archive URI the digest covers the *extracted* tree, like any directory artifact.
Candidates with a digest are staged under the node cache's per-digest lock, so pods on one node
download a digest once. The wait for that lock is bounded (``CACHE_LOCK_WAIT``): a holder that
never lets go (a wedged process on the node) costs that wait, then the artifact is fetched
without the lock (the cache keeps whichever complete copy lands first).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from pointercache.base.log import log
from pointercache.base.redact import redact_uri
from pointercache.errors import IntegrityError, StoreLocked, TooLarge
from pointercache.model.digest import listed_digest, tree_digest
from pointercache.stage.allow import split_uri
from pointercache.stage.fetchers import Fetcher, FetchOptions, FetchResult, Progress, open_fetcher
from pointercache.volume.fsutil import copy_tree, remove_path

if TYPE_CHECKING:
    from pointercache.model.candidate import Candidate
    from pointercache.model.digest import FileHash
    from pointercache.volume.cas import NodeCache

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
"""Names that may be archives; ``pointercache.stage.archive.is_archive`` has the final say."""
CACHE_LOCK_WAIT = 30.0
"""Seconds to wait for another process's download of the same digest before fetching anyway."""


@dataclass(frozen=True, slots=True)
class Staged:
    """A verified artifact in staging."""

    path: Path
    """The artifact (file or directory), ``<staging>/model``."""
    digest: str
    """``sha256:<hex>`` computed on the staged bytes."""
    size_bytes: int
    """Total bytes of the staged regular files."""
    from_cache: bool
    """True if it came from the node cache rather than the origin."""


async def prestage(
    candidate: Candidate,
    staging: Path,
    *,
    fetch: FetchOptions,
    cache: NodeCache | None,
    fetcher: Fetcher | None = None,
    progress: Progress | None = None,
    lock_wait: float = CACHE_LOCK_WAIT,
) -> Staged:
    """Stage ``candidate`` at ``staging/model`` verified; raise ``FetchError``/``IntegrityError``.

    ``fetcher`` overrides the scheme's fetcher (tests of upper layers pass a memory twin).
    ``progress`` also hears the download's progress (besides the ``fetch-progress`` log lines);
    ``lock_wait`` bounds the wait for another process's download of the same digest (seconds).
    """
    if progress is not None:
        fetch = replace(fetch, progress=_tee(fetch.progress, progress))
    await asyncio.to_thread(staging.mkdir, parents=True, exist_ok=True)
    if cache is None or candidate.digest is None:
        staged = await _fetch_verified(candidate, staging, fetch, fetcher)
        if cache is not None:
            await _cache_put(cache, staged)
        return staged
    async with contextlib.AsyncExitStack() as held:
        try:
            await held.enter_async_context(cache.alock(candidate.digest, max_wait=lock_wait))
        except StoreLocked:
            log.warning(
                "cache-lock-busy",
                digest=candidate.digest,
                waited_s=lock_wait,
                action="fetching without the node lock",
            )
        return await _cached_or_fetched(candidate, staging, fetch, fetcher, cache)


async def _cached_or_fetched(
    candidate: Candidate,
    staging: Path,
    fetch: FetchOptions,
    fetcher: Fetcher | None,
    cache: NodeCache,
) -> Staged:
    hit = await _from_cache(candidate, staging, cache, fetch.max_bytes)
    if hit is not None:
        return hit
    staged = await _fetch_verified(candidate, staging, fetch, fetcher)
    await _cache_put(cache, staged)
    return staged


def _tee(first: Progress | None, second: Progress) -> Progress:
    if first is None:
        return second

    def both(done: int, total: int | None) -> None:
        first(done, total)
        second(done, total)

    return both


async def _from_cache(
    candidate: Candidate, staging: Path, cache: NodeCache, max_bytes: int
) -> Staged | None:
    """The candidate's artifact from the node cache, copied and then verified; None on a miss.

    The node directory is untrusted (every pod on the node can write it), so the entry is
    *copied* into staging (``copy_tree``: no hard link, no symlink followed, bounded by the
    promised size) and the **copy** is verified against the digest: what is served is exactly
    what was checked, and a later write to the cache cannot reach it. A damaged entry is
    discarded and the artifact fetched from the origin.
    """
    assert candidate.digest is not None
    found = await asyncio.to_thread(cache.lookup, candidate.digest)
    if found is None:
        return None
    dest = staging / "model"
    limit = candidate.size_bytes if candidate.size_bytes is not None else max_bytes
    try:
        await asyncio.to_thread(copy_tree, found, dest, max_bytes=limit)
        digest, size = await asyncio.to_thread(tree_digest, dest)  # verify the private copy
        _verify(candidate, digest, size)
    except Exception as exc:
        log.warning("cache-damaged", digest=candidate.digest, error=exc)
        await asyncio.to_thread(remove_path, dest, ignore_errors=True)
        await asyncio.to_thread(cache.discard, candidate.digest)
        return None
    log.info("cache-hit", model=candidate.model, version=candidate.version, digest=digest)
    return Staged(path=dest, digest=digest, size_bytes=size, from_cache=True)


async def _cache_put(cache: NodeCache, staged: Staged) -> None:
    try:
        await asyncio.to_thread(cache.put, staged.path, staged.digest)
    except OSError as exc:  # a full node disk must not fail staging
        log.warning("cache-put-failed", digest=staged.digest, error=exc)


async def _fetch_verified(
    candidate: Candidate, staging: Path, fetch: FetchOptions, fetcher: Fetcher | None
) -> Staged:
    dest = staging / "model"
    # the allowlist as it applies to this candidate's origin (file:// needs a local registry)
    fetch = replace(fetch, allow=fetch.allow.scoped(candidate.provenance))
    archive_name = _archive_name(candidate.uri)
    download = staging / f"download-{archive_name}" if archive_name else dest
    reporter = None
    if fetcher is None:
        from pointercache.stage.progress import ProgressReporter

        reporter = ProgressReporter(candidate.uri, candidate.size_bytes)
        fetch = replace(fetch, progress=_tee(fetch.progress, reporter))
    own = fetcher is None
    active = open_fetcher(candidate.uri, fetch) if fetcher is None else fetcher
    try:
        started = time.monotonic()
        result = await active.fetch(candidate.uri, download)
        if fetch.downloaded is not None:
            fetch.downloaded(result.size_bytes, time.monotonic() - started)
        if reporter is not None:
            reporter.finish()
        if archive_name:
            result = await asyncio.to_thread(_extract, download, dest, fetch.max_bytes)
        digest, size = await asyncio.to_thread(_digest_of, dest, result)
        _verify(candidate, digest, size, fetch.max_bytes)
    except BaseException as exc:
        if reporter is not None and not isinstance(exc, IntegrityError):
            reporter.finish(ok=False)
        await asyncio.to_thread(remove_path, dest, ignore_errors=True)
        raise
    finally:
        if archive_name:
            await asyncio.to_thread(remove_path, download, ignore_errors=True)
        if own:
            await active.aclose()
    log.info("staged", model=candidate.model, version=candidate.version, digest=digest, bytes=size)
    return Staged(path=dest, digest=digest, size_bytes=size, from_cache=False)


def _digest_of(dest: Path, result: FetchResult | None) -> tuple[str, int]:
    """The staged artifact's digest and size.

    What the fetcher hashed while writing is not read again (that re-read costs about a second
    per GiB): a single file's size on disk must still match what the fetcher wrote; a
    directory's digest is assembled from its per-file hashes once the tree on disk is checked to
    hold exactly those files at those sizes. Anything else is hashed from disk.
    """
    if result is not None and result.sha256 and not result.is_dir and dest.is_file():
        size = dest.stat().st_size
        if size == result.size_bytes:
            return f"sha256:{result.sha256}", size
    if result is not None and result.is_dir and result.files is not None:
        listed = listed_digest(dest, result.files)
        if listed is not None:
            return listed
        log.warning("staged-tree-differs", path=str(dest))
    return tree_digest(dest)


def _verify(candidate: Candidate, digest: str, size: int, max_bytes: int | None = None) -> None:
    name = redact_uri(candidate.uri)
    if max_bytes is not None and size > max_bytes:
        raise TooLarge(f"{name}: {size} bytes is over the {max_bytes} limit")
    if candidate.digest is not None and digest != candidate.digest:
        raise IntegrityError(f"{name}: digest {digest} differs from promised {candidate.digest}")
    if candidate.size_bytes is not None and size != candidate.size_bytes:
        raise IntegrityError(f"{name}: {size} bytes differs from promised {candidate.size_bytes}")


def _archive_name(uri: str) -> str | None:
    """The URI's file name if it names an archive (the archive package is imported only then)."""
    base = PurePosixPath(split_uri(uri).path).name
    if not base.lower().endswith(ARCHIVE_SUFFIXES):
        return None
    from pointercache.stage.archive import is_archive

    return base if is_archive(base) else None


def _extract(download: Path, dest: Path, max_bytes: int) -> FetchResult:
    """Extract the archive; what it wrote, with the per-file hashes taken while writing."""
    from pointercache.stage.archive import ArchiveLimits, extract

    hashes: dict[bytes, FileHash] = {}
    size = extract(download, dest, ArchiveLimits(max_total_bytes=max_bytes), hashes)
    return FetchResult(is_dir=True, size_bytes=size, files=hashes)
