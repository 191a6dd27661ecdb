"""HTTP fetch benchmark: our HTTP fetcher vs ``curl -o`` on a 1 GiB file from a local nginx.

nginx (Debian package ``nginx``; installed with ``apt-get install -y nginx`` when missing) runs
on 127.0.0.1 with a config in ``bench/out/nginx``. Each tool downloads the file ``--runs`` times
(interleaved; median wall time of the whole process). Our side includes the digest check (the
sha256 computed while writing, compared with the expected one) and reports the peak RSS of the
fetching process (``ru_maxrss``; goal ≤ 128 MiB). For reference the table also shows
``curl`` followed by ``sha256sum`` and our fetch followed by the re-read ``tree_digest`` that
``pointercache.stage.prestage`` does today. Goal: curl / ours ≥ 0.8.

Run: ``.venv/bin/python -m bench.fetch_http [--size-mib 1024] [--runs 3]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from bench import (
    HEADERS,
    LAST_CPU,
    OUT,
    MiB,
    Results,
    fetch_in_child,
    make_random_file,
    print_table,
    timed,
)

CURL = "curl -o"
CURL_SHA = "curl -o, then sha256sum"
OURS = "pointercache (fetch + sha256 check)"
OURS_TREE = "pointercache (+ tree_digest re-read)"

NGINX_CONF = """\
worker_processes 2;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
    }}
}}
"""


def ensure_nginx() -> str:
    """Path of the nginx binary; installs the Debian package when it is missing."""
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "nginx"], check=True, env=env)
    return shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx(nginx: str, root: Path, port: int) -> subprocess.Popen[bytes]:
    """Run nginx in the foreground in its own process group; wait until it accepts."""
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, port=port))
    user = ["-g", "user root;"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(root), *user], start_new_session=True
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
        else:
            return proc
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("nginx did not start")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main(argv: list[str] | None = None) -> None:
    """Run the HTTP benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    root = OUT / "nginx"
    (root / "www").mkdir(parents=True, exist_ok=True)
    sha = make_random_file(root / "www" / "model.bin", args.size_mib * MiB)
    port = _free_port()
    proc = start_nginx(ensure_nginx(), root, port)
    try:
        rows = run_all(f"http://127.0.0.1:{port}/model.bin", sha, args.runs, args.size_mib)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    print_table(
        f"HTTP: {args.size_mib} MiB file from nginx on loopback, median of {args.runs}",
        [*HEADERS, "curl / tool"],
        rows,
    )


def run_all(url: str, sha: str, runs: int, size_mib: int) -> list[list[str]]:
    """Interleaved runs of every variant; one table row each."""
    dest = OUT / "http-dest.bin"
    env = dict(os.environ)
    results = Results()
    curl = ["curl", "-sS", "--fail", "-o", str(dest), url]
    for _ in range(runs):
        results.add(CURL, timed(curl)[0], LAST_CPU[0])
        dest.unlink()
        wall, cpu = timed(curl)[0], LAST_CPU[0]
        sha_wall, out = timed(["sha256sum", str(dest)])
        results.add(CURL_SHA, wall + sha_wall, cpu + LAST_CPU[0])
        if out.split()[0] != sha:
            raise SystemExit("curl download has the wrong digest")
        dest.unlink()
        for name, tree in ((OURS, False), (OURS_TREE, True)):
            wall, report = fetch_in_child(url, dest, sha, env, tree_digest=tree)
            results.add(name, wall, LAST_CPU[0], report)
            dest.unlink()
    return results.rows(CURL, size_mib)


if __name__ == "__main__":
    main()
