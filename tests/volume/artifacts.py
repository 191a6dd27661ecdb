"""Helpers shared by the store tests, the crash driver and the checker process."""

from __future__ import annotations

import random
from pathlib import Path

from pointercache.model.digest import tree_digest
from pointercache.model.pointer import Pointer, SourceKind
from pointercache.volume.store import Store
from tests import helpers as factories

MODEL = "crashy"


def make_pointer(
    version: str,
    digest: str,
    size: int,
    *,
    model: str = MODEL,
    revision: int = 1,
    source: SourceKind = "registry",
    detail: str = "test",
) -> Pointer:
    """Build a valid pointer for ``version`` with the given digest and size."""
    return factories.make_pointer(
        model=model,
        version=version,
        uri=f"file:///artifacts/{model}/{version}",
        digest=digest,
        size_bytes=size,
        revision=revision,
        source=source,
        source_detail=detail,
    )


def write_version_files(dest: Path, version: str, *, large: int = 2 << 20) -> Path:
    """Write the deterministic artifact of ``version`` at ``dest``; return the artifact path.

    The same version always gets the same bytes (so the same digest): several files of varying
    sizes in nested directories, one of them large-ish for some versions, or a single file.
    """
    rng = random.Random(f"artifact-{version}")
    if rng.random() < 0.2:
        dest.write_bytes(rng.randbytes(rng.choice([0, 10, 70_000, 600_000])))
        return dest
    dest.mkdir()
    for index in range(rng.randint(1, 6)):
        sub = dest / rng.choice(["", "weights", "weights/shards", "tokenizer files"])
        sub.mkdir(parents=True, exist_ok=True)
        size = rng.choice([0, 1, 100, 4096, 65_536, 300_000])
        (sub / f"part-{index}.bin").write_bytes(rng.randbytes(size))
    if rng.random() < 0.4:
        (dest / "weights").mkdir(exist_ok=True)
        (dest / "weights" / "big.bin").write_bytes(rng.randbytes(rng.randint(large // 2, large)))
    (dest / "MLmodel").write_text(f"version: {version}\n")
    return dest


def install_version(
    store: Store, version: str, *, model: str = MODEL, source: SourceKind = "registry"
) -> tuple[Path, Pointer]:
    """Stage, digest and install ``version``; return the version dir and its pointer."""
    staging = store.new_staging_dir()
    artifact = write_version_files(staging / "model", version)
    digest, size = tree_digest(artifact)
    pointer = make_pointer(version, digest, size, model=model, source=source)
    return store.install(artifact, pointer), pointer
