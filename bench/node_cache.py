"""What a node cache hit and a cache put cost now that entries are copied, never linked.

The node directory is untrusted, so a cache hit copies the entry into staging and hashes the
private copy (``pointercache.stage.prestage._from_cache``), and a put copies the verified
artifact into the cache (``NodeCache.put``). Before, both were hard links (and the hit was
hashed through the link). This prints, for one artifact of ``--size-mib`` MiB in ``--files``
files on the filesystem of ``--dir``, the median over ``--runs`` of:

- ``link+hash``: the old hit (hard links, then ``tree_digest``);
- ``copy+hash``: the new hit (``copy_tree``, then ``tree_digest`` of the copy);
- ``cp+sha256sum``: coreutils doing the same (``cp -r`` then ``sha256sum`` of every file);
- ``put link`` / ``put copy``: adding an artifact to the cache, before and now;

and the ratios ``copy+hash / link+hash`` and ``copy+hash / cp+sha256sum``. ``copy_tree`` clones
(FICLONE) where the filesystem supports it; the line ``reflink`` says whether it did here.
The page cache is warm for every variant (the same files are read each run).

Run: ``.venv/bin/python -m bench.node_cache [--size-mib 512] [--files 4] [--runs 5]``
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pointercache.model.digest import tree_digest
from pointercache.volume.fsutil import FICLONE, copy_tree, copy_tree_or_link


def _artifact(root: Path, size_mib: int, files: int) -> None:
    root.mkdir(parents=True)
    chunk = os.urandom(1 << 20)
    for i in range(files):
        with (root / f"part-{i}.bin").open("wb") as out:
            for _ in range(max(1, size_mib // files)):
                out.write(chunk)


def _reflinks(directory: Path) -> bool:
    src, dst = directory / "probe-src", directory / "probe-dst"
    src.write_bytes(b"x" * 4096)
    try:
        with src.open("rb") as fin, dst.open("wb") as fout:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
    except OSError:
        return False
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
    return True


def _median(run: Callable[[Path], object], scratch: Path, runs: int) -> float:
    times = []
    for i in range(runs):
        dest = scratch / f"run-{i}"
        started = time.perf_counter()
        run(dest)
        times.append(time.perf_counter() - started)
        shutil.rmtree(dest)
    return statistics.median(times)


def main() -> None:
    """Build the artifact, time every variant, print a table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("bench/out"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        entry = base / "cas-entry"
        _artifact(entry, args.size_mib, args.files)
        scratch = base / "scratch"
        scratch.mkdir()

        def coreutils(dest: Path) -> None:
            subprocess.run(["cp", "-r", str(entry), str(dest)], check=True)
            files = sorted(str(p) for p in dest.rglob("*") if p.is_file())
            subprocess.run(["sha256sum", *files], check=True, capture_output=True)

        results = {
            "link+hash (before)": _median(
                lambda d: (copy_tree_or_link(entry, d), tree_digest(d)), scratch, args.runs
            ),
            "copy+hash (now)": _median(
                lambda d: (copy_tree(entry, d), tree_digest(d)), scratch, args.runs
            ),
            "cp+sha256sum": _median(coreutils, scratch, args.runs),
            "put link (before)": _median(lambda d: copy_tree_or_link(entry, d), scratch, args.runs),
            "put copy (now)": _median(lambda d: copy_tree(entry, d), scratch, args.runs),
        }
        print(f"artifact: {args.size_mib} MiB in {args.files} files, {args.runs} runs, median")
        print(f"reflink (FICLONE) on {args.dir}: {_reflinks(scratch)}")
        for name, seconds in results.items():
            print(f"  {name:<22} {seconds:8.3f} s   {args.size_mib / seconds:8.0f} MiB/s")
        now, before = results["copy+hash (now)"], results["link+hash (before)"]
        print(f"copy+hash / link+hash    = {now / before:.2f}")
        print(f"copy+hash / cp+sha256sum = {now / results['cp+sha256sum']:.2f}")


if __name__ == "__main__":
    main()
