"""pointercache against what users would otherwise run, on the artifact shapes of a model fleet.

Peers, each in its own virtualenv under the ignored ``bench/out/`` (created on first use, from
PyPI, never in the project's environment):

- KServe's storage initializer, ``kserve-storage`` (``Storage.download(uri, out_dir)``: boto3
  with a ``multiprocessing.Pool`` for S3 prefixes, ``requests`` for HTTP);
- ``aws s3 cp --recursive`` (``awscli``) with its defaults;
- ``curl -o`` for HTTP (nginx from ``bench.fetch_http``).

Shapes: ``s3-400x256k`` (400 objects of 256 KiB under one prefix), ``s3-5000x4k`` (5,000 of
4 KiB), ``http-1g`` (one 1 GiB file). Our side is a fresh ``python`` running the fetcher and the
digest the way ``pointercache.stage.prestage`` does (the tree digest assembled from the hashes
taken while writing; a single file's sha256 from the download) and comparing it with the source's.

Every round runs every tool once, in turn (interleaved). After each run the output is checked
against the source digest (outside the timing); a mismatch aborts. The table shows the median
wall time with its range, the median CPU time (user + system, children included) and peak RSS
(``/usr/bin/time``; for KServe's worker processes only the largest one), and each peer's time
divided by ours, per round: median and range. Above 1.0 means we are faster.

Run: ``.venv/bin/python -m bench.peers [--shapes s3-400x256k,s3-5000x4k,http-1g] [--runs 5]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import OUT, REPO, MiB
from bench.fetch_s3 import ensure_awscli

KSERVE_VENV = OUT / "kserve"
TIME = "/usr/bin/time"

OURS_CHILD = """
import asyncio, sys
from pathlib import Path
from pointercache.model.digest import listed_digest, tree_digest
from pointercache.stage.fetchers import FetchOptions, open_fetcher
uri, dest, expected = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
async def run():
    fetcher = open_fetcher(uri, FetchOptions())
    try:
        return await fetcher.fetch(uri, dest)
    finally:
        await fetcher.aclose()
result = asyncio.run(run())
if result.is_dir:
    digest = (listed_digest(dest, result.files) if result.files else None) or tree_digest(dest)
    digest = digest[0]
else:
    digest = "sha256:" + result.sha256
if digest != expected:
    sys.exit(f"digest mismatch: {digest} != {expected}")
"""

KSERVE_CHILD = """
import sys
from kserve_storage import Storage
Storage.download(sys.argv[1], sys.argv[2])
"""


def ensure_kserve() -> Path:
    """The Python of the benchmark's KServe virtualenv (created on first use)."""
    python = KSERVE_VENV / "bin" / "python"
    if not python.exists():
        uv = REPO / ".venv" / "bin" / "uv"
        subprocess.run(
            [str(uv), "venv", "-q", "--python", sys.executable, str(KSERVE_VENV)], check=True
        )
        subprocess.run(
            [str(uv), "pip", "install", "-q", "--python", str(python), "kserve-storage"], check=True
        )
    return python


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall s, CPU s, peak RSS KiB) of ``cmd`` measured by GNU time."""
    report = OUT / "time.txt"
    run = subprocess.run(
        [TIME, "-f", "%e %U %S %M", "-o", str(report), *cmd],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        sys.exit(f"benchmark command failed ({run.returncode}): {cmd[:4]}\n{run.stderr[-2000:]}")
    wall, user, system, rss = report.read_text().split()[-4:]
    return float(wall), float(user) + float(system), int(rss)


def _digest(path: Path) -> str:
    from pointercache.model.digest import tree_digest

    return tree_digest(path)[0]


@dataclass(frozen=True)
class Shape:
    """One artifact shape: where it is, its digest, and the commands that fetch it."""

    name: str
    uri: str
    url: str
    digest: str
    files: int
    env: dict[str, str]

    def tools(self, dest: Path, aws: Path, kserve: Path) -> dict[str, list[str]]:
        """Tool name → command writing the artifact at ``dest``."""
        ours = [sys.executable, "-c", OURS_CHILD, self.uri, str(dest), self.digest]
        kserve_cmd = [str(kserve), "-c", KSERVE_CHILD, self.url, str(dest)]
        if self.uri.startswith("s3://"):
            cp = [str(aws), "s3", "cp", "--recursive", "--only-show-errors", self.uri, str(dest)]
            return {"pointercache": ours, "aws s3 cp": cp, "KServe": kserve_cmd}
        curl = ["curl", "-sS", "--fail", "-o", str(dest), self.url]
        return {"pointercache": ours, "curl -o": curl, "KServe": kserve_cmd}


def _output(dest: Path, shape: Shape) -> Path:
    """KServe writes an HTTP file inside ``out_dir`` under its own name."""
    if dest.is_dir() and not shape.uri.startswith("s3://"):
        inner = [p for p in dest.iterdir() if p.is_file()]
        if len(inner) == 1:
            return inner[0]
    return dest


def run_shape(shape: Shape, runs: int, aws: Path, kserve: Path) -> None:
    """Interleaved rounds of every tool on ``shape``; print its table."""
    dest = OUT / "peers-dest"
    results: dict[str, list[tuple[float, float, int]]] = {}
    for _ in range(runs):
        for tool, cmd in shape.tools(dest, aws, kserve).items():
            shutil.rmtree(dest, ignore_errors=True)
            dest.unlink(missing_ok=True)
            results.setdefault(tool, []).append(_timed(cmd, shape.env))
            got = _digest(_output(dest, shape))
            if got != shape.digest:
                sys.exit(f"{tool}: output digest {got} != source {shape.digest}")
        shutil.rmtree(dest, ignore_errors=True)
        dest.unlink(missing_ok=True)
    ours = results["pointercache"]
    print(f"\n{shape.name}: median of {runs} interleaved rounds, every output digest-checked")
    print(f"{'tool':<14} {'wall s':>16} {'CPU s':>7} {'RSS MiB':>8} {'tool / ours':>20}")
    for tool, got in results.items():
        walls = [w for w, _, _ in got]
        ratios = [w / o[0] for w, o in zip(walls, ours, strict=True)]
        cpu = statistics.median(c for _, c, _ in got)
        rss = statistics.median(r for _, _, r in got) / 1024
        spread = f"{min(walls):.2f}-{max(walls):.2f}"
        ratio = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        line = f"{tool:<14} {statistics.median(walls):6.2f} ({spread:>9}) {cpu:7.2f} {rss:8.0f}"
        print(f"{line} {ratio:>20}")
    per_file = statistics.median(c for _, c, _ in ours) / shape.files * 1000
    print(f"pointercache CPU per file (start-up included): {per_file:.2f} ms")


def _upload(client: Any, prefix: str, count: int, size: int, src: Path) -> str:
    """Write ``count`` random objects under ``bench/<prefix>`` and at ``src``; return the digest."""
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)

    def one(i: int) -> None:
        body = os.urandom(size)
        rel = f"shard-{i // 100:03d}/part-{i:05d}.bin"
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(body)
        client.put_object(Bucket="bench", Key=f"{prefix}/{rel}", Body=body)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))
    return _digest(src)


def main(argv: list[str] | None = None) -> None:
    """Set up the servers and data, run the chosen shapes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", default="s3-400x256k,s3-5000x4k,http-1g")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from tests.servers import MotoServer

    OUT.mkdir(exist_ok=True)
    aws, kserve = ensure_awscli(), ensure_kserve()
    wanted = args.shapes.split(",")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    moto = MotoServer(log_path=OUT / "moto.log")
    moto.start()
    base_env = {
        **os.environ,
        **moto.env(),
        "AWS_CONFIG_FILE": str(OUT / "aws-default.ini"),
        "S3_VERIFY_SSL": "0",
        "S3_USE_HTTPS": "0",
    }
    (OUT / "aws-default.ini").write_text("[default]\n")
    work = Path(tempfile.mkdtemp(prefix="peers-", dir=OUT))
    nginx = None
    try:
        client = moto.client()
        client.create_bucket(Bucket="bench")
        for shape_name in wanted:
            if shape_name.startswith("s3-"):
                count, size = {"s3-400x256k": (400, 256 << 10), "s3-5000x4k": (5000, 4 << 10)}[
                    shape_name
                ]
                digest = _upload(client, shape_name, count, size, work / shape_name)
                uri = f"s3://bench/{shape_name}/"
                shape = Shape(shape_name, uri, uri, digest, count, base_env)
            else:
                from bench import make_random_file
                from bench.fetch_http import _free_port, ensure_nginx, start_nginx

                root = OUT / "nginx"
                (root / "www").mkdir(parents=True, exist_ok=True)
                sha = make_random_file(root / "www" / "model.bin", 1024 * MiB)
                if nginx is None:
                    port = _free_port()
                    nginx = start_nginx(ensure_nginx(), root, port)
                url = f"http://127.0.0.1:{port}/model.bin"
                shape = Shape(shape_name, url, url, f"sha256:{sha}", 1, base_env)
            run_shape(shape, args.runs, aws, kserve)
        print(f"\nload average after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        moto.stop()
        if nginx is not None:
            os.killpg(nginx.pid, 9)
            nginx.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
