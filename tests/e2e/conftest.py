"""Fixtures for end-to-end tests of the init container and the sidecar."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.helpers import MODEL, make_artifact, write_manifest


@dataclass
class World:
    """A node, a pod volume and a file:// registry on tmp_path."""

    base: Path
    manifest: Path
    root: Path
    lkg: Path
    term: Path

    def common(self, root: Path | None = None, lkg: Path | None = None) -> list[str]:
        """Flags shared by init and sidecar for this world."""
        return [
            "--model",
            MODEL,
            "--registry",
            self.manifest.as_uri(),
            "--root",
            str(root or self.root),
            "--lkg-dir",
            str(lkg or self.lkg),
        ]

    def init_args(
        self, *extra: str, root: Path | None = None, lkg: Path | None = None
    ) -> list[str]:
        """Flags for ``pointercache init`` in this world."""
        return [*self.common(root, lkg), "--termination-log", str(self.term), *extra]

    def publish(self, revision: int, production: str, **kw: object) -> None:
        """Rewrite the manifest so that ``production`` names ``production``."""
        write_manifest(
            self.manifest, self.base, revision=revision, aliases={"production": production}, **kw
        )  # type: ignore[arg-type]


@pytest.fixture
def world(tmp_path: Path) -> World:
    """Artifacts v1 and v2, and a manifest whose production alias names v1 (revision 1)."""
    make_artifact(tmp_path, "1")
    make_artifact(tmp_path, "2")
    w = World(
        tmp_path,
        tmp_path / "registry" / f"{MODEL}.json",
        tmp_path / "pod",
        tmp_path / "node-lkg",
        tmp_path / "termination-log",
    )
    w.publish(1, "1")
    return w
