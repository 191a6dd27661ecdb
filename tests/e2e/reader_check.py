"""A concurrent reader process for crash tests: checks the volume contract continuously.

Usage: python -m tests.e2e.reader_check ROOT REPORT STOPFILE

Every loop resolves ``current`` once and checks that ``pointer.json`` parses and that the tree
digest of ``model`` equals the pointer's digest. A failure counts as a violation only while
``current`` still names the same version (an old version may be collected after a flip).
The report file gets one JSON object: {"checks": N, "violations": [...]}.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pointercache.model.digest import tree_digest
from pointercache.model.pointer import Pointer


def check_once(root: Path, seen: bool) -> tuple[bool, str | None]:
    """Check the volume once; return (a version was seen, violation or None)."""
    try:
        target = os.readlink(root / "current")
    except FileNotFoundError:
        return seen, ("current vanished after it existed" if seen else None)
    version_dir = root / target
    try:
        pointer = Pointer.read(version_dir / "pointer.json")
        digest = tree_digest(version_dir / "model")[0]
        via_links = Pointer.read(root / "pointer.json")
    except Exception as exc:
        problem = f"{target}: {type(exc).__name__}: {exc}"
    else:
        if digest == pointer.digest and via_links.digest and (root / "model").exists():
            return True, None
        problem = f"{target}: model digest {digest} != pointer {pointer.digest}"
    try:
        still = os.readlink(root / "current") == target
    except FileNotFoundError:
        still = False
    return True, (problem if still else None)


def main() -> int:
    """Loop until the stop file appears, then write the report."""
    root, report, stop = (Path(a) for a in sys.argv[1:4])
    checks, violations, seen = 0, [], False
    while not stop.exists():
        seen, problem = check_once(root, seen)
        checks += 1
        if problem:
            violations.append(problem)
    report.write_text(json.dumps({"checks": checks, "violations": violations[:50]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
