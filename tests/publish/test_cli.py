"""``pointercache publish`` and ``outbox`` as commands: input checks, exit codes, disk full."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pointercache.model.digest import tree_digest
from pointercache.model.manifest import parse
from tests.helpers import cli, wait_until
from tests.publish.conftest import DIGEST, listed, publish, publish_args, run_cli


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--digest", "sha256:xyz"], "--digest"),
        (["--digest", DIGEST, "--digest-from", "/"], "exclude each other"),
        (["--digest-from", "/nonexistent/model"], "--digest-from"),
        (["--tag", "novalue"], "KEY=VALUE"),
        (["--tag", "pointercache.revision=1"], "--tag"),
        (["--signature", "/nonexistent.json"], "--signature"),
        (["--registry-timeout", "0"], "--registry-timeout"),
    ],
)
def test_bad_input_exits_2_and_queues_nothing(
    cli_env: dict[str, str], tmp_path: Path, extra: list[str], message: str
) -> None:
    """A malformed flag exits 2 naming it; the outbox is not even created."""
    args = publish_args((tmp_path / "m.json").as_uri(), tmp_path / "ob", "m", "1", *extra)
    proc = run_cli(cli_env, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "ob").exists()


@pytest.mark.parametrize(
    ("registry", "message"),
    [
        ("http://host/m.json", "cannot publish to 'http'"),
        ("mlflow+http://user:pw@host:5000", "no user info"),
        ("s3://bucket/", "expected s3://bucket/key.json"),
        ("configmap://Bad/x", "configmap://NAMESPACE/NAME"),
    ],
)
def test_a_registry_that_cannot_be_written_is_bad_input(
    cli_env: dict[str, str], tmp_path: Path, registry: str, message: str
) -> None:
    """Unknown schemes and malformed registry URIs exit 2 before anything is queued."""
    proc = run_cli(cli_env, *publish_args(registry, tmp_path / "ob", "m", "1"))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "pw" not in proc.stderr
    assert not (tmp_path / "ob").exists()


def test_digest_from_computes_the_tree_digest_and_size(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """--digest-from writes the project's tree digest and the byte count into the manifest."""
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "a.bin").write_bytes(b"a" * 10)
    (model / "sub" / "b.bin").write_bytes(b"b" * 5)
    manifest = tmp_path / "m.json"
    extra = ["--digest-from", str(model)]
    publish(cli_env, manifest.as_uri(), tmp_path / "ob", "m", "1", *extra)
    entry = parse(manifest.read_bytes(), model="m", max_bytes=1 << 20).versions["1"]
    assert (entry.digest, entry.size_bytes) == tree_digest(model)
    wrong = run_cli(cli_env, *publish_args(manifest.as_uri(), tmp_path / "o2", "m", "2", *extra,
                                           "--size-bytes", "3"))  # fmt: skip
    assert wrong.returncode == 2
    assert "counts 15 bytes" in wrong.stderr


def test_outbox_list_shows_state_attempts_and_last_error(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A registry that cannot be written: queued, with attempts and the reason, in both forms."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the registry's directory should be")
    registry = (blocker / "m.json").as_uri()
    outbox = tmp_path / "ob"
    answer = publish(cli_env, registry, outbox, "m", "1", "--alias", "production")
    assert answer["state"] == "queued"
    text = run_cli(cli_env, "outbox", "list", "--outbox", str(outbox))
    assert text.returncode == 0
    header, row = text.stdout.splitlines()
    assert header.split()[:6] == ["SEQ", "STATE", "MODEL", "VERSION", "ALIAS", "ATTEMPTS"]
    assert row.split()[:6] == ["1", "queued", "m", "1", "production", "1"]
    assert "SourceUnavailable" in row
    (entry,) = listed(cli_env, outbox)
    assert (entry["attempts"], entry["key"]) == (1, answer["key"])
    drained = run_cli(cli_env, "outbox", "drain", "--outbox", str(outbox))
    assert drained.returncode == 1
    assert "pending 1" in drained.stdout


def test_outbox_run_drains_once_the_registry_is_back_and_exits_0_on_sigterm(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The sidecar mode keeps retrying with backoff, registers when it can, stops on SIGTERM."""
    blocker = tmp_path / "registry"
    blocker.write_text("not a directory yet")
    manifest = blocker / "m.json"
    outbox = tmp_path / "ob"
    for version in ("1", "2"):
        publish(cli_env, manifest.as_uri(), outbox, "m", version, "--alias", "production")
    env = cli_env | {"POINTERCACHE_OUTBOX": str(outbox)}
    run = subprocess.Popen(
        cli("outbox", "run", "--backoff-initial", "0.05", "--backoff-max", "0.2"),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        blocker.unlink()
        wait_until(lambda: [e["state"] for e in listed(cli_env, outbox)] == ["registered"] * 2)
    finally:
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    doc = parse(manifest.read_bytes(), model="m", max_bytes=1 << 20)
    assert (doc.revision, doc.aliases["production"]) == (2, "2")
    assert '"event":"registered"' in err


def test_help_names_the_commands_and_flags(cli_env: dict[str, str]) -> None:
    """The top-level help lists publish and outbox; publish --help shows each flag's shape."""
    top = run_cli(cli_env, "--help")
    assert "publish" in top.stdout
    assert "outbox" in top.stdout
    helped = run_cli(cli_env, "publish", "--help").stdout
    for shown in ("--digest-from PATH", "--tag KEY=VALUE", "--outbox DIR", "--registry URI"):
        assert shown in helped


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs; skipped only where this process may not mount one."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8); the SQLITE_FULL variant runs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> int | None:
    """Write zeros to ``path`` until the filesystem refuses; the errno it refused with."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        return exc.errno
    finally:
        os.close(fd)


def test_a_full_disk_under_the_outbox_is_a_clear_error(
    cli_env: dict[str, str], tmp_path: Path, small_tmpfs: Path
) -> None:
    """On a full tmpfs publish exits 1 naming the outbox and SQLite's code; v1 stays intact."""
    outbox = small_tmpfs / "ob"
    registry = (tmp_path / "m.json").as_uri()
    assert publish(cli_env, registry, outbox, "m", "1")["state"] == "registered"
    assert fill(small_tmpfs / "filler") == errno.ENOSPC
    tags = [arg for n in range(8) for arg in ("--tag", f"t{n}={'x' * 4000}")]
    proc = run_cli(cli_env, *publish_args(registry, outbox, "m", "2", *tags))
    assert proc.returncode == 1
    assert f"outbox {outbox}" in proc.stderr
    assert "SQLITE_FULL" in proc.stderr or "SQLITE_IOERR" in proc.stderr
    assert proc.stdout == ""
    (small_tmpfs / "filler").unlink()
    entries = listed(cli_env, outbox)
    assert [(e["version"], e["state"]) for e in entries] == [("1", "registered")]
    again = run_cli(cli_env, *publish_args(registry, outbox, "m", "2"))
    assert json.loads(again.stdout)["state"] == "registered"
