"""The atomic store on the shared volume (DESIGN.md section 2).

::

    <root>/
      model        -> current/model          static relative link
      pointer.json -> current/pointer.json   static relative link
      current      -> versions/<model>/<version>-<digest12>      the single commit point
      versions/<model>/<version>-<digest12>/{model,pointer.json}  complete, verified, durable
      .staging/    in-progress work (fetches, version dirs being built, versions being deleted)
      .lock        single-writer lock (flock)
      .state/      the sidecar's small documents (``save_state``), kept across its restarts

A version directory is built inside ``.staging`` (the artifact made durable by one ``syncfs`` of
the volume, or an fsync per file where syncfs is unavailable, then moved in; ``pointer.json``
written and fsynced) and renamed into ``versions/`` whole, so it never exists half-built.
Publishing is one rename of a temp symlink over ``current`` and an fsync of the root. Garbage
collection renames a version into ``.staging`` before deleting it, so a crash leaves only
``.staging`` leftovers, which ``recover`` removes. Every mutating method requires ``lock()`` to
be held by this instance. A ``Store`` is used by one thread at a time.

"Newest" means most recently installed or published: the store stamps the version directory's
mtime with a per-model monotonic clock. ``OSError`` is translated to ``StoreError`` naming the
errno (``ENOSPC`` for a full volume); what was published stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pointercache.base.log import log
from pointercache.errors import ConfigError, StoreError, StoreLocked
from pointercache.model.pointer import Pointer, check_digest
from pointercache.model.revision import Claim
from pointercache.volume import claims, layout
from pointercache.volume.fsutil import (
    DIR_MODE,
    TMP_PREFIX,
    LockBusy,
    Writer,
    atomic_symlink,
    atomic_write_bytes,
    copy_tree_or_link,
    flock_exclusive,
    fsync_dir,
    publish_modes,
    remove_path,
    sync_tree,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator

CURRENT = layout.CURRENT
MODEL = layout.MODEL
POINTER = layout.POINTER
VERSIONS = layout.VERSIONS
STAGING = layout.STAGING
LOCK = layout.LOCK


@contextlib.contextmanager
def _translate(op: str) -> Iterator[None]:
    """Turn an ``OSError`` into a ``StoreError`` naming the operation and the errno."""
    try:
        yield
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, "EIO")
        where = f" ({exc.filename})" if exc.filename else ""
        raise StoreError(f"{op}: {code} {exc.strerror or exc}{where}") from exc


class Store:
    """Single-writer, crash-safe store of model versions under ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        keep_versions: int = 2,
        write: Writer = os.write,
        sync: Callable[[Path], None] = sync_tree,
    ) -> None:
        """``write`` and ``sync`` (``fsutil.sync_tree``) let tests inject a failing disk or a
        crash at the moment a tree is made durable, through our own code."""
        if keep_versions < 1:
            raise ConfigError(f"keep_versions: {keep_versions} must be at least 1")
        self.root = Path(root)
        self.keep_versions = keep_versions
        self._write = write
        self._sync = sync
        self._lock_fd: int | None = None

    @property
    def versions_dir(self) -> Path:
        """``<root>/versions``."""
        return self.root / VERSIONS

    @property
    def staging_dir(self) -> Path:
        """``<root>/.staging``."""
        return self.root / STAGING

    def ensure_layout(self) -> None:
        """Create ``root/``, ``root/versions/`` and ``root/.staging/`` if missing.

        ``.staging`` and ``versions`` must be real directories, never symlinks: recovery empties
        ``.staging`` and garbage collection deletes under ``versions``, and neither may reach
        another directory. A ``.staging`` that is not a directory is replaced (it only ever holds
        leftovers); a ``versions`` that is not one is a ``StoreError``. ``versions/`` gets
        ``DIR_MODE`` (0755) whatever the umask, so a model container running as another user can
        reach the published version.
        """
        with _translate("ensure-layout"):
            self.root.mkdir(parents=True, exist_ok=True)
            _real_dir(self.versions_dir, replace=False)
            _real_dir(self.staging_dir, replace=True)
            if stat.S_IMODE(self.versions_dir.stat().st_mode) != DIR_MODE:
                self.versions_dir.chmod(DIR_MODE)

    @contextlib.contextmanager
    def lock(self, *, timeout: float = 0.0) -> Iterator[None]:
        """Hold the single-writer lock (``flock`` on ``root/.lock``); re-entrant per instance.

        Creates the layout (``ensure_layout``) once the lock is held.

        Raise ``StoreLocked`` if another process (or another ``Store``) holds it for ``timeout``.
        """
        if self._lock_fd is not None:
            yield
            return
        try:
            with _translate("lock"):
                self.root.mkdir(parents=True, exist_ok=True)
                fd = flock_exclusive(self.root / LOCK, timeout=timeout)
        except StoreError as exc:
            if isinstance(exc.__cause__, LockBusy):
                holder = exc.__cause__.holder
                msg = f"{self.root}: another writer holds {LOCK} (pid {holder})"
                raise StoreLocked(msg) from None
            raise
        self._lock_fd = fd
        try:
            self.ensure_layout()
            yield
        finally:
            self._lock_fd = None
            os.close(fd)

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise StoreError(f"{self.root}: hold Store.lock() while changing the store")

    def recover(self) -> list[Path]:
        """Remove ``.staging`` leftovers and stray temp files/links; repair the static links."""
        self._require_lock()
        self.ensure_layout()
        removed: list[Path] = []
        with _translate("recover"):
            removed += sorted(self.staging_dir.iterdir())
            dirs = [self.root, *self._model_dirs()]
            if _is_real_dir(self.root / layout.STATE):
                dirs.append(self.root / layout.STATE)
            dirs += [v for d in dirs[1:] for v in d.iterdir() if _is_real_dir(v)]
            removed += [p for d in dirs for p in d.iterdir() if p.name.startswith(TMP_PREFIX)]
            for path in removed:
                remove_path(path)
            for path in {p.parent for p in removed}:
                fsync_dir(path)
            if os.path.lexists(self.root / CURRENT):
                self._ensure_static_links()
        if removed:
            log.info("store-recovered", root=str(self.root), removed=len(removed))
        return removed

    def new_staging_dir(self) -> Path:
        """Create and return a fresh empty directory inside ``root/.staging``."""
        self._require_lock()
        with _translate("staging"):
            self.staging_dir.mkdir(parents=True, exist_ok=True)
            path = self.staging_dir / f"stage-{secrets.token_hex(6)}"
            path.mkdir()
        return path

    def stage(self, src: Path, *, name: str = MODEL) -> Path:
        """Copy (or hardlink) ``src`` into a fresh staging dir; return the staged artifact path.

        On failure (``ENOSPC``...) the partial copy is removed and ``StoreError`` raised.
        """
        staging = self.new_staging_dir()
        try:
            with _translate("stage"):
                copy_tree_or_link(Path(src), staging / name, write=self._write)
        except BaseException:
            remove_path(staging)
            raise
        return staging / name

    def install(self, artifact: Path, pointer: Pointer) -> Path:
        """Make ``versions/<model>/<short>`` from a verified staged artifact; return that dir.

        ``artifact`` (a file or dir inside ``.staging``) is consumed with its staging dir. If the
        version is installed already (same digest), only its ``pointer.json`` is rewritten.
        On failure the staged artifact is discarded and ``StoreError`` raised.
        """
        self._require_lock()
        artifact = Path(artifact)
        entry = self._staging_entry(artifact)
        target = self.root / layout.version_dir(pointer.model, pointer.short)
        try:
            if target.is_dir():
                self.update_pointer(target, pointer)
            else:
                self._build(artifact, pointer, target)
        finally:
            with contextlib.suppress(OSError):
                remove_path(entry)
        with _translate("install"):
            self._stamp(target)
        log.debug(
            "store-installed", model=pointer.model, version=pointer.version, digest=pointer.digest
        )
        return target

    def _build(self, artifact: Path, pointer: Pointer, target: Path) -> None:
        wrap = self.new_staging_dir()
        try:
            with _translate("install"):
                publish_modes(artifact)  # 0644/0755, whatever the umask and the fetcher did
                self._sync(artifact)  # the artifact is durable before any name points at it
                artifact.rename(wrap / MODEL)
                atomic_write_bytes(wrap / POINTER, pointer.to_json(), write=self._write)
                wrap.chmod(DIR_MODE)
                fsync_dir(wrap)
                if not target.parent.is_dir():
                    target.parent.mkdir()
                    target.parent.chmod(DIR_MODE)
                    fsync_dir(self.versions_dir)
                wrap.rename(target)
                fsync_dir(target.parent)
        finally:
            with contextlib.suppress(OSError):
                remove_path(wrap)

    def install_from(self, existing: Path, pointer: Pointer) -> Path:
        """Install ``pointer`` reusing the artifact of the installed version ``existing``.

        Both must have the same digest. Same version: only ``pointer.json`` is rewritten. Another
        version name with the same bytes (a re-registered model): the files are hard-linked into
        a new version dir, nothing is fetched. Returns the version dir to publish.
        """
        existing = Path(existing)
        if existing.name == pointer.short:
            self.update_pointer(existing, pointer)
            with _translate("install"):
                self._stamp(existing)
            return existing
        if self._read_pointer(existing).digest != pointer.digest:
            raise StoreError(f"{existing}: holds another digest than {pointer.short}")
        return self.install(self.stage(existing / MODEL), pointer)

    def update_pointer(self, version_dir: Path, pointer: Pointer) -> None:
        """Atomically rewrite an installed version's ``pointer.json`` (same version and digest)."""
        self._require_lock()
        version_dir = Path(version_dir)
        existing = self._read_pointer(version_dir)
        if (existing.model, existing.version, existing.digest) != (
            pointer.model,
            pointer.version,
            pointer.digest,
        ):
            raise StoreError(f"{version_dir}: holds {existing.short}, not {pointer.short}")
        with _translate("update-pointer"):
            atomic_write_bytes(version_dir / POINTER, pointer.to_json(), write=self._write)

    def write_claim(self, version_dir: Path, claim: Claim | None) -> None:
        """Record the registry claim behind ``version_dir``'s pointer (``volume.claims``)."""
        self._require_lock()
        with _translate("write-claim"):
            claims.write(Path(version_dir), claim, write=self._write)

    def read_claim(self, version_dir: Path) -> Claim | None:
        """The claim recorded beside ``version_dir``'s pointer; None if none or unreadable."""
        return claims.read(Path(version_dir))

    def publish(self, version_dir: Path) -> None:
        """Flip ``current`` to an installed version: one rename of a temp link, root fsynced."""
        self._require_lock()
        version_dir = Path(version_dir)
        pointer = self._read_pointer(version_dir)
        rel = layout.version_dir(pointer.model, pointer.short)
        if version_dir.resolve() != (self.root / rel).resolve():
            raise StoreError(f"{version_dir}: not an installed version of {self.root}")
        if not os.path.lexists(version_dir / MODEL):
            raise StoreError(f"{version_dir}: has no {MODEL}")
        with _translate("publish"):
            self._ensure_static_links()  # before the first flip: they work the moment it lands
            atomic_symlink(rel, self.root / CURRENT)
            self._stamp(version_dir)
        log.debug(
            "store-published",
            model=pointer.model,
            version=pointer.version,
            digest=pointer.digest,
            source=pointer.source,
        )

    def current_dir(self) -> Path | None:
        """Return the version dir ``current`` points at, or None before the first publish."""
        try:
            target = (self.root / CURRENT).readlink()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.root / CURRENT}: unreadable link ({exc.strerror})") from exc
        path = self.root / target
        if not path.is_dir():
            raise StoreError(f"{self.root / CURRENT}: points at missing {target}")
        return path

    def current(self) -> Pointer | None:
        """Return the pointer of the current version (``InvalidPointer`` if damaged)."""
        path = self.current_dir()
        return None if path is None else self._read_pointer(path)

    def versions(self, model: str | None = None) -> list[tuple[Path, Pointer]]:
        """Return installed versions with their pointers, newest first (damaged ones skipped)."""
        out: list[tuple[int, Path, Pointer]] = []
        for model_dir in self._model_dirs(model):
            out.extend(self._versions_in(model_dir))
        out.sort(key=lambda item: (item[0], item[1].name), reverse=True)
        return [(path, pointer) for _, path, pointer in out]

    def _versions_in(self, model_dir: Path) -> list[tuple[int, Path, Pointer]]:
        """(mtime, dir, pointer) of each installed version in one model directory."""
        out: list[tuple[int, Path, Pointer]] = []
        for vdir in model_dir.iterdir():
            if vdir.name.startswith(TMP_PREFIX) or not _is_real_dir(vdir):
                continue
            try:
                out.append((vdir.stat().st_mtime_ns, vdir, self._read_pointer(vdir)))
            except (StoreError, FileNotFoundError) as exc:
                log.warning("store-version-damaged", path=str(vdir), error=exc)
        return out

    def find(self, model: str, digest: str) -> Path | None:
        """Return an installed version dir of ``model`` whose artifact has ``digest``, or None."""
        suffix = "-" + check_digest("digest", digest).removeprefix("sha256:")[:12]
        for path, pointer in self.versions(model):
            if path.name.endswith(suffix) and pointer.digest == digest:
                return path
        return None

    def gc(self, protect_digests: Collection[str] = ()) -> list[Path]:
        """Keep the newest ``keep_versions`` per model, the current one and protected digests."""
        self._require_lock()
        current = self.current_dir()
        removed: list[Path] = []
        with _translate("gc"):
            for model_dir in self._model_dirs():
                newest = sorted(
                    self._versions_in(model_dir), key=lambda v: (v[0], v[1].name), reverse=True
                )
                for index, (_, path, pointer) in enumerate(newest):
                    if index < self.keep_versions or path == current:
                        continue
                    if pointer.digest in protect_digests:
                        continue
                    grave = self.staging_dir / f"gc-{secrets.token_hex(6)}"
                    path.rename(grave)
                    fsync_dir(model_dir)
                    shutil.rmtree(grave)
                    removed.append(path)
        if removed:
            log.debug("store-gc", root=str(self.root), removed=[p.name for p in removed])
        return removed

    def save_state(self, name: str, data: bytes) -> None:
        """Durably replace the document ``.state/<name>`` (a name from ``layout``)."""
        self._require_lock()
        with _translate("save-state"):
            state = self.root / layout.STATE
            if not _is_real_dir(state):  # a symlink must not send the write elsewhere
                _real_dir(state, replace=True)
                fsync_dir(self.root)
            atomic_write_bytes(state / name, data, write=self._write)

    def read_state(self, name: str, max_bytes: int) -> bytes | None:
        """The document ``.state/<name>``, or None if absent or larger than ``max_bytes``."""
        path = self.root / layout.STATE / name
        try:
            with path.open("rb") as handle:
                data = handle.read(max_bytes + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{path}: unreadable ({exc.strerror})") from exc
        return None if len(data) > max_bytes else data

    def _model_dirs(self, model: str | None = None) -> list[Path]:
        if model is not None:
            path = self.versions_dir / layout.disk_name(model)
            return [path] if _is_real_dir(path) else []
        if not _is_real_dir(self.versions_dir):
            return []
        return sorted(p for p in self.versions_dir.iterdir() if _is_real_dir(p))

    def _read_pointer(self, version_dir: Path) -> Pointer:
        try:
            return Pointer.read(version_dir / POINTER)
        except FileNotFoundError as exc:
            raise StoreError(f"{version_dir}: no {POINTER}") from exc
        except OSError as exc:
            raise StoreError(f"{version_dir / POINTER}: unreadable ({exc.strerror})") from exc

    def _staging_entry(self, artifact: Path) -> Path:
        """Return the top-level ``.staging`` entry holding ``artifact``; refuse anything else."""
        staging = self.staging_dir.resolve()
        resolved = artifact.parent.resolve() / artifact.name
        if staging not in resolved.parents:
            raise StoreError(f"{artifact}: not inside {self.staging_dir}")
        return self.staging_dir / resolved.relative_to(staging).parts[0]

    def _ensure_static_links(self) -> None:
        for name in (MODEL, POINTER):
            link = self.root / name
            want = f"{CURRENT}/{name}"
            with contextlib.suppress(OSError):
                if str(link.readlink()) == want:
                    continue
            atomic_symlink(want, link)

    def _stamp(self, version_dir: Path) -> None:
        """Mark ``version_dir`` newest of its model (mtime strictly above its siblings')."""
        siblings = [p.stat().st_mtime_ns for p in version_dir.parent.iterdir() if p != version_dir]
        now = max([time.time_ns(), *(s + 1000 for s in siblings)])
        os.utime(version_dir, ns=(now, now))


def _is_real_dir(path: Path) -> bool:
    """True for a directory that is not a symlink to one."""
    return path.is_dir() and not path.is_symlink()


def _real_dir(path: Path, *, replace: bool) -> None:
    """Make sure ``path`` is a real directory (see ``Store.ensure_layout``)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        path.mkdir()
        return
    if stat.S_ISDIR(info.st_mode):
        return
    if not replace:
        raise StoreError(f"{path}: not a directory (a symlink or a file)")
    log.warning("store-dir-replaced", path=str(path))
    path.unlink()  # the link or file itself; never what a link points at
    path.mkdir()
