"""Safe archive extraction: malicious archives are refused and write nothing outside dest."""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import re
import shutil
import stat
import subprocess
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pointercache.errors import TooLarge, UnsafeArchive
from pointercache.model.digest import FileHash, listed_digest, tree_digest
from pointercache.stage.archive import (
    ArchiveLimits,
    archive_kind,
    extract,
    is_archive,
    safe_parts,
)

Member = tuple[tarfile.TarInfo, bytes | None]


def tinfo(name: str, data: bytes = b"", type_: bytes = tarfile.REGTYPE, **kw: object) -> Member:
    """A tar member (header + data) for ``make_tar``."""
    info = tarfile.TarInfo(name)
    info.type = type_
    info.size = len(data) if type_ == tarfile.REGTYPE else 0
    for key, value in kw.items():
        setattr(info, key, value)
    return info, data if type_ == tarfile.REGTYPE else None


def make_tar(path: Path, members: list[Member], *, fmt: int = tarfile.PAX_FORMAT) -> Path:
    """Write ``members`` as a tar (gzip-compressed when the name says so)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    path.write_bytes(gzip.compress(raw) if path.name.lower().endswith("gz") else raw)
    return path


def make_zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    """Write ``members`` as a deflated zip, duplicates allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we want
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return path


def snapshot(root: Path) -> set[str]:
    """Every path under ``root`` (links not followed)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A sandbox with a victim directory next to where archives are extracted."""
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("original")
    return tmp_path


def refuse(
    box: Path,
    archive: Path,
    exc: type[Exception] = UnsafeArchive,
    limits: ArchiveLimits | None = None,
) -> str:
    """Extract ``archive``, expect ``exc``, and check nothing outside dest changed."""
    before = snapshot(box)
    with pytest.raises(exc) as info:
        extract(archive, box / "out", limits)
    assert snapshot(box) == before, "extraction left files behind or wrote outside dest"
    assert (box / "victim" / "keep.txt").read_text() == "original"
    return str(info.value)


# ---- malicious tar archives -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../evil.txt",
        "a/../../evil.txt",
        "/abs/evil.txt",
        "a/..",
        "..",
        "..\\evil.txt",
        "a\\..\\..\\evil.txt",
        "a/\nb.txt",
    ],
)
def test_tar_traversal_names_refused(box: Path, name: str) -> None:
    """Tar entries that are absolute, hold '..', backslashes or control characters are refused."""
    archive = make_tar(box / "bad.tar", [tinfo("ok.txt", b"x"), tinfo(name, b"evil")])
    refuse(box, archive)


def test_tar_pax_name_with_nul_refused(box: Path) -> None:
    """A pax 'path' record carrying NUL (which C tools would truncate) is refused."""
    info, data = tinfo("harmless.txt", b"x")
    info.pax_headers = {"path": "a.txt\x00/../../victim/keep.txt"}
    assert "NUL" in refuse(box, make_tar(box / "bad.tar", [(info, data)]))


def test_tar_symlink_escape_refused(box: Path) -> None:
    """A symlink pointing outside dest is refused, so no later file can be written through it."""
    archive = make_tar(
        box / "bad.tar.gz",
        [
            tinfo("escape", type_=tarfile.SYMTYPE, linkname=str(box / "victim")),
            tinfo("escape/keep.txt", b"pwned"),
        ],
    )
    assert "link" in refuse(box, archive)


def test_tar_symlink_inside_dest_refused_too(box: Path) -> None:
    """Even a symlink that stays inside dest is refused: model archives hold no links."""
    archive = make_tar(
        box / "bad.tar",
        [tinfo("a.txt", b"x"), tinfo("b.txt", type_=tarfile.SYMTYPE, linkname="a.txt")],
    )
    refuse(box, archive)


def test_tar_symlink_chain_refused(box: Path) -> None:
    """The CVE-2025-4517 shape (nested links walking up, then a file through them) is refused."""
    members = [
        tinfo("a/b/c", type_=tarfile.DIRTYPE),
        tinfo("a/b/c/l1", type_=tarfile.SYMTYPE, linkname="../.."),
        tinfo("a/l2", type_=tarfile.SYMTYPE, linkname="b/c/l1/../../.."),
        tinfo("a/l2/victim/keep.txt", b"pwned"),
    ]
    refuse(box, make_tar(box / "bad.tgz", members))


@pytest.mark.parametrize("linkname", ["../victim/keep.txt", "/etc/passwd", "a.txt"])
def test_tar_hardlinks_refused(box: Path, linkname: str) -> None:
    """Hard links are refused wherever they point (escape or not)."""
    archive = make_tar(
        box / "bad.tar",
        [tinfo("a.txt", b"x"), tinfo("h.txt", type_=tarfile.LNKTYPE, linkname=linkname)],
    )
    assert "link" in refuse(box, archive)


@pytest.mark.parametrize(
    "type_", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE]
)
def test_tar_special_members_refused(box: Path, type_: bytes) -> None:
    """Devices, FIFOs and other special members are refused."""
    refuse(box, make_tar(box / "bad.tar", [tinfo("dev", type_=type_, devmajor=1, devminor=3)]))


def test_tar_sparse_member_refused(box: Path) -> None:
    """A GNU sparse member (which would expand beyond its stored bytes) is refused."""
    refuse(
        box,
        make_tar(
            box / "bad.tar", [tinfo("s", type_=tarfile.GNUTYPE_SPARSE)], fmt=tarfile.GNU_FORMAT
        ),
    )


def pax_sparse(version: str, realsize: int) -> Member:
    """A PAX-described sparse member (GNU sparse format 0.0, 0.1 or 1.0), as GNU tar writes it:
    a regular member whose headers say it is ``realsize`` bytes of mostly holes."""
    data = b"x" * 512
    if version == "1.0":  # the map leads the data: 1 region (offset 0, 512 bytes), padded
        data = b"1\n0\n512\n".ljust(512, b"\0") + data
        headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
        headers |= {"GNU.sparse.name": "big.bin", "GNU.sparse.realsize": str(realsize)}
    elif version == "0.1":
        headers = {"GNU.sparse.size": str(realsize), "GNU.sparse.numblocks": "1"}
        headers["GNU.sparse.map"] = "0,512"
    else:  # 0.0: offset/numbytes pairs as repeated keywords (one pair here)
        headers = {"GNU.sparse.size": str(realsize), "GNU.sparse.numblocks": "1"}
        headers |= {"GNU.sparse.offset": "0", "GNU.sparse.numbytes": "512"}
    info = tarfile.TarInfo("GNUSparseFile.0/big.bin" if version == "1.0" else "big.bin")
    info.size = len(data)
    info.pax_headers = headers
    return info, data


@pytest.mark.parametrize("version", ["0.0", "0.1", "1.0"])
def test_tar_pax_sparse_member_refused(box: Path, version: str) -> None:
    """A one-record tar whose PAX headers describe a 50 MiB sparse file is refused, not expanded
    (the documented refusal of sparse members, for the form tarfile reads as a regular file)."""
    archive = make_tar(box / "sparse.tar", [pax_sparse(version, 50 << 20)])
    assert archive.stat().st_size <= 10 << 10
    with tarfile.open(archive) as tar:  # what extraction would have produced
        (member,) = tar.getmembers()
        assert member.isreg() and member.issparse() and member.size == 50 << 20
    assert "sparse" in refuse(box, archive)


@pytest.mark.parametrize(
    ("first", "second"),
    [("a.txt", "a.txt"), ("a.txt", "./a.txt"), ("d/a.txt", "d//a.txt"), ("a", "a/b.txt")],
)
def test_tar_duplicates_refused(box: Path, first: str, second: str) -> None:
    """Two entries with the same normalised name, or a file used as a directory, are refused."""
    archive = make_tar(box / "bad.tar", [tinfo(first, b"1"), tinfo(second, b"2")])
    assert re.search("duplicate|conflicting|is a file", refuse(box, archive))


def test_tar_dir_after_file_refused(box: Path) -> None:
    """A directory entry with the name of an earlier file is refused."""
    archive = make_tar(box / "bad.tar", [tinfo("m", b"1"), tinfo("m", type_=tarfile.DIRTYPE)])
    assert "conflicting" in refuse(box, archive)


def patch_size(raw: bytearray, size: int) -> bytearray:
    """Rewrite the size field of the first tar header and fix its checksum."""
    raw[124:136] = f"{size:011o}\0".encode()
    raw[148:156] = b" " * 8
    raw[148:156] = f"{sum(raw[:512]):06o}\0 ".encode()
    return raw


def test_tar_header_size_shorter_than_data_refused(box: Path) -> None:
    """A header that under-states its data makes the next 'header' garbage: refused, not ignored."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info, data = tinfo("a.bin", os.urandom(4096))
        tar.addfile(info, io.BytesIO(data))
    archive = box / "bad.tar"
    archive.write_bytes(bytes(patch_size(bytearray(raw.getvalue()), 10)))
    assert "header" in refuse(box, archive)


def test_tar_header_size_longer_than_data_refused(box: Path) -> None:
    """A header that over-states its data hits the end of the stream: refused."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info, data = tinfo("a.bin", b"x" * 600)
        tar.addfile(info, io.BytesIO(data))
    data = bytes(patch_size(bytearray(raw.getvalue()), 1 << 20))[:2048]
    archive = box / "bad.tar.gz"
    archive.write_bytes(gzip.compress(data))
    refuse(box, archive)


def test_tar_header_size_over_limit_refused_early(box: Path) -> None:
    """A header promising more than the byte limit is refused before anything is written."""
    archive = make_tar(box / "big.tar", [tinfo("a.bin", b"x" * 5000)])
    refuse(box, archive, TooLarge, ArchiveLimits(max_total_bytes=4096))


def test_tar_total_bytes_counted_across_files(box: Path) -> None:
    """Files that are each small but too large together are refused."""
    archive = make_tar(box / "big.tar", [tinfo(f"f{i}", b"x" * 1000) for i in range(5)])
    refuse(box, archive, TooLarge, ArchiveLimits(max_total_bytes=4500))


def test_tar_too_many_entries_refused(box: Path) -> None:
    """More entries than the limit are refused."""
    archive = make_tar(box / "many.tar", [tinfo(f"f{i}", b"x") for i in range(20)])
    assert "entries" in refuse(box, archive, TooLarge, ArchiveLimits(max_entries=10))


def test_gzip_bomb_ratio_refused(box: Path) -> None:
    """A tar.gz that expands far beyond its compressed size is refused while streaming."""
    archive = make_tar(box / "bomb.tgz", [tinfo("zeros.bin", bytes(4 << 20))])
    assert archive.stat().st_size < 20_000
    limits = ArchiveLimits(max_ratio=50, ratio_floor=64 << 10)
    assert "times its size" in refuse(box, archive, TooLarge, limits)


def test_tar_huge_pax_header_refused(box: Path) -> None:
    """A pax header too large to be read into memory safely is refused."""
    info, data = tinfo("a.txt", b"x")
    info.pax_headers = {"comment": "y" * (2 << 20)}
    assert "extended header" in refuse(box, make_tar(box / "pax.tar", [(info, data)]))


def chained_headers(path: Path, count: int, kind: bytes) -> Path:
    """A tar whose one member follows ``count`` chained GNU long-name or pax headers."""
    blocks = bytearray()
    for _ in range(count):
        header = tarfile.TarInfo("././@LongLink")
        payload = (
            b"a" * 100 + b"\0" if kind == tarfile.GNUTYPE_LONGNAME else b"20 comment=xxxxxxx\n"
        )
        header.type, header.size = kind, len(payload)
        blocks += header.tobuf(tarfile.USTAR_FORMAT)
        blocks += payload + b"\0" * (-len(payload) % tarfile.BLOCKSIZE)
    member = tarfile.TarInfo("model.bin")
    member.size = 3
    blocks += member.tobuf(tarfile.USTAR_FORMAT) + b"abc" + b"\0" * (tarfile.BLOCKSIZE - 3)
    blocks += b"\0" * (2 * tarfile.BLOCKSIZE)
    path.write_bytes(bytes(blocks))
    return path


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE])
def test_tar_hundreds_of_chained_headers_refused(box: Path, kind: bytes) -> None:
    """Hundreds of chained long-name or pax headers are refused (tarfile would recurse)."""
    archive = chained_headers(box / "chain.tar", 600, kind)
    assert "extended headers before one member" in refuse(box, archive)


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE])
def test_tar_a_few_chained_headers_are_fine(tmp_path: Path, kind: bytes) -> None:
    """Real archives chain a few headers before a member; those extract."""
    archive = chained_headers(tmp_path / "chain.tar", 3, kind)
    extract(archive, tmp_path / "out")
    assert [p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()] == [b"abc"]


def test_corrupt_gzip_refused(box: Path) -> None:
    """A truncated or corrupt gzip stream is refused."""
    good = make_tar(box / "g.tgz", [tinfo("a.bin", os.urandom(100_000))]).read_bytes()
    (box / "g.tgz").unlink()
    archive = box / "bad.tgz"
    archive.write_bytes(good[: len(good) // 2])
    refuse(box, archive)


def test_not_an_archive_refused(box: Path) -> None:
    """A file that is no tar at all is refused."""
    archive = box / "junk.tar"
    archive.write_bytes(b"\x01" * 1024)
    refuse(box, archive)


# ---- malicious zip archives -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../evil.txt", "/evil.txt", "a/../../evil.txt", "..\\evil.txt", "a\\b.txt"]
)
def test_zip_slip_refused(box: Path, name: str) -> None:
    """Zip entries escaping dest (zip slip) or using backslashes or NUL are refused."""
    refuse(box, make_zip(box / "bad.zip", [("ok.txt", b"x"), (name, b"evil")]))


def test_zip_name_with_nul_refused(box: Path) -> None:
    """A zip name carrying NUL (zipfile would silently truncate it) is refused."""
    archive = make_zip(box / "nul.zip", [("ok.txt", b"x"), ("aQ/../../evil.txt", b"evil")])
    archive.write_bytes(archive.read_bytes().replace(b"aQ/", b"a\x00/"))
    assert "NUL" in refuse(box, archive)


@pytest.mark.parametrize(
    "mode",
    [stat.S_IFLNK | 0o777, stat.S_IFCHR | 0o644, stat.S_IFIFO | 0o644, stat.S_IFSOCK | 0o644],
)
def test_zip_links_and_specials_refused(box: Path, mode: int) -> None:
    """Zip entries whose Unix mode says symlink, device, FIFO or socket are refused."""
    info = zipfile.ZipInfo("link")
    info.create_system = 3
    info.external_attr = mode << 16
    refuse(box, make_zip(box / "bad.zip", [(info, str(box / "victim").encode())]))


def test_zip_duplicates_refused(box: Path) -> None:
    """Two zip entries with the same (normalised) name are refused."""
    for name, first, second in (("dup.zip", "a/b.txt", "a//b.txt"), ("dup2.zip", "a", "a")):
        archive = make_zip(box / name, [(first, b"1"), (second, b"2")])
        assert "duplicate" in refuse(box, archive)


def test_zip_bomb_ratio_refused(box: Path) -> None:
    """A zip whose entries expand far beyond the archive size is refused."""
    archive = make_zip(box / "bomb.zip", [(f"z{i}", bytes(1 << 20)) for i in range(4)])
    assert "times" in refuse(
        box, archive, TooLarge, ArchiveLimits(max_ratio=50, ratio_floor=64 << 10)
    )


def zip_sizes(archive: Path, size: int) -> None:
    """Rewrite the declared uncompressed size in both the local and central headers."""
    raw = bytearray(archive.read_bytes())
    local = raw.find(b"PK\x03\x04")
    raw[local + 22 : local + 26] = size.to_bytes(4, "little")
    central = raw.find(b"PK\x01\x02")
    raw[central + 24 : central + 28] = size.to_bytes(4, "little")
    archive.write_bytes(bytes(raw))


@pytest.mark.parametrize("declared", [10, 50_000])
def test_zip_lying_sizes_refused(box: Path, declared: int) -> None:
    """A zip entry whose declared size differs from its real data is refused (CRC or EOF)."""
    archive = make_zip(box / "lie.zip", [("a.bin", os.urandom(20_000))])
    zip_sizes(archive, declared)
    refuse(box, archive)


def test_zip_declared_size_over_limit_refused(box: Path) -> None:
    """A zip entry declaring more than the byte limit is refused before writing."""
    archive = make_zip(box / "big.zip", [("a.bin", b"x" * 10_000)])
    refuse(box, archive, TooLarge, ArchiveLimits(max_total_bytes=5000))


def test_zip_too_many_entries_refused(box: Path) -> None:
    """A zip with more entries than the limit is refused before anything is written."""
    archive = make_zip(box / "many.zip", [(f"f{i}", b"x") for i in range(20)])
    refuse(box, archive, TooLarge, ArchiveLimits(max_entries=10))


def test_zip_encrypted_refused(box: Path) -> None:
    """Encrypted zip entries are refused with a clear reason."""
    archive = make_zip(box / "enc.zip", [("a.txt", b"x")])
    raw = bytearray(archive.read_bytes())
    for magic, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = raw.find(magic) + off
        raw[pos] |= 0x1
    archive.write_bytes(bytes(raw))
    assert "encrypted" in refuse(box, archive)


# ---- good archives ----------------------------------------------------------------------------


def tree(root: Path) -> dict[str, bytes | None]:
    """Relative path → bytes (files) or None (directories)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")
    }


GOOD = {
    "MLmodel": b"flavors: {}\n",
    "model.pkl": os.urandom(70_000),
    "sub/dir/weights.bin": bytes(1000) + b"end",
    "sub/" + "n" * 150: b"long name",
}


@pytest.mark.parametrize("name", ["m.tar", "m.tar.gz", "m.tgz", "m.TGZ"])
@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_good_tar_extracts_the_right_tree(tmp_path: Path, name: str, fmt: int) -> None:
    """A plain tar archive, with './' prefixes, long names and an empty dir, extracts exactly,
    each file hashed while written."""
    members = [tinfo(".", type_=tarfile.DIRTYPE), tinfo("./empty", type_=tarfile.DIRTYPE)]
    members += [tinfo("./" + n, d, mode=0o6755) for n, d in GOOD.items()]
    archive = make_tar(tmp_path / name, members, fmt=fmt)
    hashes: dict[bytes, FileHash] = {}
    written = extract(archive, tmp_path / "out", hashes=hashes)
    assert listed_digest(tmp_path / "out", hashes) == tree_digest(tmp_path / "out")
    got = tree(tmp_path / "out")
    assert written == sum(len(d) for d in GOOD.values())
    assert {k: v for k, v in got.items() if v is not None} == GOOD
    assert got["empty"] is None
    mode = (tmp_path / "out" / "model.pkl").stat().st_mode
    assert not mode & (stat.S_ISUID | stat.S_ISGID | 0o111), "archive modes must not be applied"


def test_good_zip_extracts_the_right_tree(tmp_path: Path) -> None:
    """A zip with directory entries extracts exactly its files, each hashed while written."""
    archive = make_zip(tmp_path / "m.zip", [("sub/", b""), *GOOD.items()])
    hashes: dict[bytes, FileHash] = {}
    assert extract(archive, tmp_path / "out", hashes=hashes) == sum(len(d) for d in GOOD.values())
    assert listed_digest(tmp_path / "out", hashes) == tree_digest(tmp_path / "out")
    assert {k: v for k, v in tree(tmp_path / "out").items() if v is not None} == GOOD


def test_existing_empty_dest_is_used_and_emptied_on_failure(tmp_path: Path) -> None:
    """An existing empty directory is accepted as dest and left empty when extraction fails."""
    dest = tmp_path / "out"
    dest.mkdir()
    bad = make_tar(tmp_path / "bad.tar", [tinfo("a.txt", b"x"), tinfo("../b.txt", b"y")])
    with pytest.raises(UnsafeArchive):
        extract(bad, dest)
    assert dest.is_dir()
    assert list(dest.iterdir()) == []
    good = make_tar(tmp_path / "good.tar", [tinfo("a.txt", b"x")])
    assert extract(good, dest) == 1


def test_dest_must_be_new_or_empty(tmp_path: Path) -> None:
    """A non-empty dest or a dest that is a symlink is refused before reading the archive."""
    good = make_tar(tmp_path / "good.tar", [tinfo("a.txt", b"x")])
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    with pytest.raises(FileExistsError):
        extract(good, full)
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(FileExistsError):
        extract(good, tmp_path / "link")
    assert list((tmp_path / "target").iterdir()) == []


def test_archive_kind_by_suffix_and_magic(tmp_path: Path) -> None:
    """Archives are recognised by suffix, else by magic bytes; other files are refused."""
    make_tar(tmp_path / "a.tgz", [tinfo("x", b"1")])
    make_zip(tmp_path / "b.zip", [("x", b"1")])
    make_tar(tmp_path / "c.tar", [tinfo("x", b"1")])
    for src, kind in (("a.tgz", "tar.gz"), ("b.zip", "zip"), ("c.tar", "tar")):
        assert archive_kind(tmp_path / src) == kind
        (tmp_path / src).rename(tmp_path / f"noext-{kind}")
        assert archive_kind(tmp_path / f"noext-{kind}") == kind
    (tmp_path / "blob").write_bytes(b"not an archive")
    with pytest.raises(UnsafeArchive):
        archive_kind(tmp_path / "blob")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("m.tar", True),
        ("m.tar.gz", True),
        ("M.TGZ", True),
        ("m.zip", True),
        ("m.pkl", False),
        ("m.gz", False),
        ("tar", False),
        ("m.tar.bz2", False),
    ],
)
def test_is_archive(name: str, expected: bool) -> None:
    """is_archive recognises exactly .tar, .tar.gz, .tgz and .zip (any case)."""
    assert is_archive(name) is expected


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("a/b", ("a", "b")),
        ("./a//b/", ("a", "b")),
        (".", ()),
        ("a/./b", ("a", "b")),
    ],
)
def test_safe_parts_normalises(name: str, parts: tuple[str, ...]) -> None:
    """Entry names are normalised by dropping '.' and empty components."""
    assert safe_parts(name) == parts


@pytest.mark.parametrize("name", ["a/" * 70 + "x", "x" * 256, "y/" * 600])
def test_safe_parts_limits(name: str) -> None:
    """Too deep, too long, or over-long components are refused."""
    with pytest.raises(UnsafeArchive):
        safe_parts(name)


@given(st.text(alphabet=["a", "b", ".", "/", "\\", "\x00", "\n", "é"], max_size=40))
def test_safe_parts_never_escapes(name: str) -> None:
    """Whatever a name looks like, accepted components stay inside dest once joined."""
    try:
        parts = safe_parts(name)
    except UnsafeArchive:
        return
    dest = "/dest"
    joined = posixpath.normpath(posixpath.join(dest, *parts))
    assert joined == dest or joined.startswith(dest + "/")
    assert all(p not in {"", ".", ".."} and "/" not in p and "\\" not in p for p in parts)


def test_archive_made_by_gnu_tar_extracts(tmp_path: Path) -> None:
    """An archive written by the real tar tool (./ prefixes, directory entries) extracts."""
    tar_bin = shutil.which("tar")
    if tar_bin is None:
        pytest.skip("no tar binary")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name, data in GOOD.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    archive = tmp_path / "m.tgz"
    subprocess.run([tar_bin, "-C", str(src), "-czf", str(archive), "."], check=True)
    hashes: dict[bytes, FileHash] = {}
    extract(archive, tmp_path / "out", hashes=hashes)
    assert listed_digest(tmp_path / "out", hashes) == tree_digest(src)
    assert {k: v for k, v in tree(tmp_path / "out").items() if v is not None} == GOOD


def test_gnu_tar_hardlinks_are_refused(tmp_path: Path) -> None:
    """Hard-linked files archived by the real tar tool are refused (links are never extracted)."""
    tar_bin = shutil.which("tar")
    if tar_bin is None:
        pytest.skip("no tar binary")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"weights")
    os.link(src / "a.bin", src / "b.bin")
    archive = tmp_path / "m.tar"
    subprocess.run([tar_bin, "-C", str(src), "-cf", str(archive), "."], check=True)
    with pytest.raises(UnsafeArchive, match="link"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
