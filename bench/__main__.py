"""Run every benchmark module of this package, one process each: ``python -m bench``.

Each module is also runnable alone (``python -m bench.<name> --help`` for its options).
``--only NAME`` (repeatable) restricts the run.
"""

from __future__ import annotations

import argparse
import pkgutil
import subprocess
import sys
from pathlib import Path


def modules() -> list[str]:
    """Names of the benchmark modules present (every public module of the package)."""
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main() -> int:
    """Run the benchmarks in name order; the exit code is the number of failures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", default=[], metavar="NAME")
    args = parser.parse_args()
    failures = 0
    for name in modules():
        if args.only and name not in args.only:
            continue
        print(f"\n=== bench.{name} ===", flush=True)
        failures += (
            subprocess.run([sys.executable, "-m", f"bench.{name}"], check=False).returncode != 0
        )
    return failures


if __name__ == "__main__":
    sys.exit(main())
