"""S3 fetch benchmark: our S3 fetcher vs ``aws s3 cp`` on the same object in moto's server.

A 512 MiB random object is uploaded to a local moto server; each tool downloads it ``--runs``
times (interleaved, median wall time of the whole process). Our side includes the digest check
(the sha256 computed while fetching, compared with the expected one); a second row adds the
re-read ``tree_digest`` that ``pointercache.stage.prestage`` does today. The AWS CLI
(PyPI ``awscli``) is
installed into ``bench/out/awscli`` on first use, never into the project's environment.

Note on moto: its server answers a ranged GET by slicing the whole object in memory, so each
request costs O(object size) on the server side; fewer, larger parts are favoured. The table
therefore also shows the AWS CLI tuned to our part size and concurrency (16 MiB, 8).

Run: ``.venv/bin/python -m bench.fetch_s3 [--size-mib 512] [--runs 3]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from bench import (
    HEADERS,
    LAST_CPU,
    OUT,
    REPO,
    MiB,
    Results,
    fetch_in_child,
    make_random_file,
    print_table,
    timed,
)

AWS_VENV = OUT / "awscli"
OURS = "pointercache (fetch + sha256 check)"
OURS_TREE = "pointercache (+ tree_digest re-read)"
AWS_DEFAULT = "aws s3 cp (defaults: 8 MiB x 10)"
AWS_TUNED = "aws s3 cp (16 MiB x 8)"


def ensure_awscli() -> Path:
    """The ``aws`` executable of the benchmark's own virtualenv (created on first use)."""
    aws = AWS_VENV / "bin" / "aws"
    if not aws.exists():
        uv = REPO / ".venv" / "bin" / "uv"
        subprocess.run(
            [str(uv), "venv", "-q", "--python", sys.executable, str(AWS_VENV)], check=True
        )
        subprocess.run(
            [
                str(uv),
                "pip",
                "install",
                "-q",
                "--python",
                str(AWS_VENV / "bin" / "python"),
                "awscli",
            ],
            check=True,
        )
    return aws


def _aws_config(path: Path, chunk_mib: int, concurrency: int) -> Path:
    path.write_text(
        "[default]\ns3 =\n"
        f"  multipart_chunksize = {chunk_mib}MB\n"
        f"  max_concurrent_requests = {concurrency}\n"
    )
    return path


def main(argv: list[str] | None = None) -> None:
    """Run the S3 benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from tests.servers import MotoServer

    OUT.mkdir(exist_ok=True)
    aws = ensure_awscli()
    src = OUT / f"s3-src-{args.size_mib}m.bin"
    sha = make_random_file(src, args.size_mib * MiB)
    server = MotoServer(log_path=OUT / "moto.log")
    server.start()
    try:
        client = server.client()
        client.create_bucket(Bucket="bench")
        client.upload_file(str(src), "bench", "model.bin")
        rows = run_all(server.env(), aws, sha, args.runs, args.size_mib)
    finally:
        server.stop()
    print_table(
        f"S3: {args.size_mib} MiB object from moto_server, median of {args.runs} runs",
        [*HEADERS, "aws default / tool"],
        rows,
    )


def run_all(
    env_extra: dict[str, str], aws: Path, sha: str, runs: int, size_mib: int
) -> list[list[str]]:
    """Interleaved runs of every variant; one table row each."""
    env = {**os.environ, **env_extra, "AWS_CONFIG_FILE": str(OUT / "aws-default.ini")}
    (OUT / "aws-default.ini").write_text("[default]\n")
    tuned = {**env, "AWS_CONFIG_FILE": str(_aws_config(OUT / "aws-tuned.ini", 16, 8))}
    dest = OUT / "s3-dest.bin"
    cp = [
        str(aws),
        "s3",
        "cp",
        "--only-show-errors",
        "s3://bench/model.bin",
        str(dest),
        "--endpoint-url",
        env_extra["AWS_ENDPOINT_URL"],
    ]
    results = Results()
    for _ in range(runs):
        for name, tree in ((OURS, False), (OURS_TREE, True)):
            wall, report = fetch_in_child("s3://bench/model.bin", dest, sha, env, tree_digest=tree)
            results.add(name, wall, LAST_CPU[0], report)
            dest.unlink()
        for name, cmd_env in ((AWS_DEFAULT, env), (AWS_TUNED, tuned)):
            results.add(name, timed(cp, cmd_env)[0], LAST_CPU[0])
            dest.unlink()
    return results.rows(AWS_DEFAULT, size_mib)


if __name__ == "__main__":
    main()
