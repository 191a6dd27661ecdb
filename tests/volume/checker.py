"""A reader process that checks the published contract continuously while writers crash.

Run from the repository root::

    python -m tests.volume.checker ROOT VIOLATIONS STATS STOPFILE

Until STOPFILE exists it resolves ``current`` through ``pointercache.reader`` and checks that
``pointer.json`` parses, that ``tree_digest(model)`` and the size equal the pointer's, that the
static ``model`` and ``pointer.json`` links work, and that ``current`` never disappears once
published. Each violation is appended as one line to VIOLATIONS. A file vanishing mid-hash is
only a violation if ``current`` still points at that version (otherwise keep-N collected an
old version under a slow reader, which the contract allows). Counters go to STATS as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pointercache import reader
from pointercache.model.digest import tree_digest
from pointercache.model.pointer import Pointer


class Checker:
    """Holds counters and the violations file."""

    def __init__(self, root: Path, violations: Path) -> None:
        self.root = root
        self.violations = violations.open("a", buffering=1)
        self.seen_published = False
        self.checks = 0
        self.raced = 0
        self.versions: set[str] = set()

    def violation(self, text: str) -> None:
        """Record one violation line."""
        self.violations.write(f"{time.time():.3f} {text}\n")

    def check_once(self) -> None:
        """Run every check once against whatever is published now."""
        try:
            loaded = reader.current(self.root)
        except Exception as exc:
            self.violation(f"current() failed: {type(exc).__name__}: {exc}")
            return
        if loaded is None:
            if self.seen_published:
                self.violation("current vanished after a publish")
            time.sleep(0.002)
            return
        self.seen_published = True
        self.versions.add(loaded.version_dir.name)
        self._check_model(loaded)
        self._check_static_links()
        self.checks += 1

    def _check_model(self, loaded: reader.LoadedModel) -> None:
        try:
            digest, size = tree_digest(loaded.path)
        except FileNotFoundError as exc:
            still = reader.current(self.root)
            if still is not None and still.version_dir == loaded.version_dir:
                self.violation(f"{loaded.version_dir.name}: file missing while current: {exc}")
            else:
                self.raced += 1
            return
        except Exception as exc:
            self.violation(f"{loaded.version_dir.name}: digest failed: {type(exc).__name__}: {exc}")
            return
        if (digest, size) != (loaded.pointer.digest, loaded.pointer.size_bytes):
            self.violation(
                f"{loaded.version_dir.name}: model is {digest} ({size} B) but pointer says "
                f"{loaded.pointer.digest} ({loaded.pointer.size_bytes} B)"
            )

    def _check_static_links(self) -> None:
        try:
            Pointer.read(self.root / "pointer.json")
        except Exception as exc:
            self.violation(f"static pointer.json: {type(exc).__name__}: {exc}")
        if not (self.root / "model").exists():
            self.violation("static model link dangles")


def main(argv: list[str]) -> int:
    """Check until the stop file appears, then write the counters."""
    root, violations, stats, stop = (Path(a) for a in argv)
    checker = Checker(root, violations)
    while not stop.exists():
        checker.check_once()
        time.sleep(0.001)  # leave the 2-core CI machine some room for the writer
    stats.write_text(
        json.dumps(
            {"checks": checker.checks, "raced": checker.raced, "versions": len(checker.versions)}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
