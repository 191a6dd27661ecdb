"""The HTTP fetcher against a misbehaving aiohttp origin on 127.0.0.1."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pytest

from pointercache.adapters.pace import Pace
from pointercache.adapters.retry import Backoff
from pointercache.errors import (
    ArtifactNotFound,
    FetchError,
    FetchUnavailable,
    ForbiddenURI,
    Stalled,
    TooLarge,
)
from pointercache.stage.fetchers import FetchOptions, open_fetcher
from pointercache.stage.fetchers.http import HttpFetcher
from tests.stage.conftest import allow
from tests.stage.origin import ETAG, LAST_MODIFIED, SECRET, Origin, start_origin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    """A fresh origin server for one test."""
    server, runner = await start_origin()
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()


async def _fetch(origin: Origin, path: str, dest: Path, **kw: object) -> tuple[object, HttpFetcher]:
    attempts = kw.pop("attempts", 4)
    backoff = Backoff(attempts=attempts, initial=0.01, maximum=0.1)  # type: ignore[arg-type]
    options = FetchOptions(allow=allow(origin.url("/")), backoff=backoff, **kw)  # type: ignore[arg-type]
    fetcher = HttpFetcher(options)
    try:
        return await fetcher.fetch(origin.url(path), dest), fetcher
    finally:
        await fetcher.aclose()


async def test_file_is_streamed_with_its_digest(origin: Origin, tmp_path: Path) -> None:
    """A plain 200 body is written to dest and its sha256 is reported."""
    seen: list[tuple[int, int | None]] = []
    options = FetchOptions(allow=allow(origin.url("/")), progress=lambda d, t: seen.append((d, t)))
    fetcher = open_fetcher(origin.url("/file"), options)
    try:
        result = await fetcher.fetch(origin.url("/file"), tmp_path / "m.bin")
    finally:
        await fetcher.aclose()
    assert (tmp_path / "m.bin").read_bytes() == origin.data
    assert (result.is_dir, result.size_bytes) == (False, len(origin.data))
    assert result.sha256 == hashlib.sha256(origin.data).hexdigest()
    assert seen[-1] == (len(origin.data), len(origin.data))


async def test_broken_body_is_resumed_with_range(origin: Origin, tmp_path: Path) -> None:
    """A connection dropped mid-body is resumed from the received offset, guarded by If-Range."""
    result, _ = await _fetch(origin, "/drop", tmp_path / "m.bin")
    assert result.sha256 == hashlib.sha256(origin.data).hexdigest()  # type: ignore[attr-defined]
    first, second = origin.seen("/drop")
    assert first.range is None
    assert second.range is not None
    assert int(second.range.removeprefix("bytes=").rstrip("-")) > 0
    assert (second.if_range, second.status) == (ETAG, 206)


async def test_weak_etag_resumes_with_last_modified(origin: Origin, tmp_path: Path) -> None:
    """A weak ETag cannot guard a range, so the resume's If-Range carries Last-Modified."""
    result, _ = await _fetch(origin, "/drop-weak", tmp_path / "m.bin")
    assert result.sha256 == hashlib.sha256(origin.data).hexdigest()  # type: ignore[attr-defined]
    _, second = origin.seen("/drop-weak")
    assert (second.if_range, second.status) == (LAST_MODIFIED, 206)


async def test_server_ignoring_range_restarts(origin: Origin, tmp_path: Path) -> None:
    """When the server answers a resume with 200, the download restarts and the digest is right."""
    result, _ = await _fetch(origin, "/drop-norange", tmp_path / "m.bin")
    assert result.sha256 == hashlib.sha256(origin.data).hexdigest()  # type: ignore[attr-defined]
    assert (tmp_path / "m.bin").read_bytes() == origin.data
    assert [h.status for h in origin.seen("/drop-norange")] == [200, 200]
    assert origin.seen("/drop-norange")[1].range is not None


async def test_no_validator_restarts_without_range(origin: Origin, tmp_path: Path) -> None:
    """Without ETag or Last-Modified a resume is unsafe, so the retry asks for the whole body."""
    result, _ = await _fetch(origin, "/drop-nocheck", tmp_path / "m.bin")
    assert result.sha256 == hashlib.sha256(origin.data).hexdigest()  # type: ignore[attr-defined]
    assert [h.range for h in origin.seen("/drop-nocheck")] == [None, None]


# /hang-body: the first attempt makes progress (1000 bytes), which renews the attempt budget, so
# it takes at least one request more than /hang-headers, where no attempt ever makes progress.
@pytest.mark.parametrize(("path", "requests"), [("/hang-headers", 2), ("/hang-body", 3)])
async def test_hanging_server_times_out(
    origin: Origin, tmp_path: Path, path: str, requests: int
) -> None:
    """A server that stops sending fails with FetchUnavailable after the read timeout."""
    with pytest.raises(FetchUnavailable):
        await _fetch(origin, path, tmp_path / "m.bin", read_timeout=0.5, attempts=2)
    if path == "/hang-headers":
        assert len(origin.seen(path)) == requests
    else:
        assert len(origin.seen(path)) >= requests
    assert not (tmp_path / "m.bin").exists()


async def test_redirect_to_metadata_address_is_refused(origin: Origin, tmp_path: Path) -> None:
    """A redirect to 169.254.169.254 is ForbiddenURI; the hop is refused before any request."""
    with pytest.raises(ForbiddenURI):
        await _fetch(origin, "/redirect-meta", tmp_path / "m.bin", connect_timeout=30.0)
    assert not (tmp_path / "m.bin").exists()


async def test_redirect_loop_stops_at_the_limit(origin: Origin, tmp_path: Path) -> None:
    """A redirect loop fails with FetchError after max_redirects hops."""
    with pytest.raises(FetchError) as info:
        await _fetch(origin, "/loop", tmp_path / "m.bin")
    assert not isinstance(info.value, FetchUnavailable)
    assert len(origin.seen("/loop")) == 6  # the first request and five redirects


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_oversized_body_is_too_large(origin: Origin, tmp_path: Path, path: str) -> None:
    """A body over max_bytes, announced or not, raises TooLarge and leaves no file."""
    with pytest.raises(TooLarge):
        await _fetch(origin, path, tmp_path / "m.bin", max_bytes=1 << 20)
    assert not (tmp_path / "m.bin").exists()


@pytest.mark.parametrize(
    ("path", "error"), [("/missing", ArtifactNotFound), ("/error", FetchUnavailable)]
)
async def test_status_codes_are_translated(
    origin: Origin, tmp_path: Path, path: str, error: type[Exception]
) -> None:
    """404 is ArtifactNotFound and 503 is FetchUnavailable (retried first)."""
    with pytest.raises(error):
        await _fetch(origin, path, tmp_path / "m.bin", attempts=2)
    assert len(origin.seen(path)) == (2 if error is FetchUnavailable else 1)


async def test_presigned_query_never_logged(
    origin: Origin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through a redirect, a break and a resume, the signature never reaches logs or errors."""
    result, _ = await _fetch(origin, "/start", tmp_path / "m.bin")
    assert result.sha256 == hashlib.sha256(origin.data).hexdigest()  # type: ignore[attr-defined]
    with pytest.raises(ArtifactNotFound) as info:
        await _fetch(origin, f"/missing?X-Amz-Signature={SECRET}", tmp_path / "x.bin")
    err = capsys.readouterr().err
    assert "http-redirect" in err
    assert "http-retry" in err
    assert SECRET not in err
    assert SECRET not in str(info.value)
    assert [h.status for h in origin.seen("/signed")] == [200, 206]


async def test_policy_is_checked_first(origin: Origin, tmp_path: Path) -> None:
    """A URI outside the policy is ForbiddenURI and the origin gets no request."""
    fetcher = HttpFetcher(FetchOptions(allow=allow("http://127.0.0.1:1/")))
    try:
        with pytest.raises(ForbiddenURI):
            await fetcher.fetch(origin.url("/file"), tmp_path / "m.bin")
    finally:
        await fetcher.aclose()
    assert origin.hits == []


async def test_presigned_query_is_sent_byte_for_byte(origin: Origin, tmp_path: Path) -> None:
    """The percent-encoding of a presigned query string is not normalized on the way out."""
    target = "/file?X-Amz-Credential=AKIA%2F20260101%2Fus-east-1&X-Amz-Signature=ab%2B%3D"
    result, _ = await _fetch(origin, target, tmp_path / "m.bin")
    assert result.sha256 == hashlib.sha256(origin.data).hexdigest()  # type: ignore[attr-defined]
    assert [h.raw for h in origin.seen("/file")] == [target]


@pytest.mark.parametrize("path", ["/resume-200-tail", "/resume-206-wrong", "/resume-200-same-etag"])
async def test_a_resume_answered_with_other_bytes_starts_over(
    origin: Origin, tmp_path: Path, path: str
) -> None:
    """A resume answered with other bytes (a 200 with the tail, a 206 from 0) starts over."""
    # The body breaks after 3 MiB of 8 MiB; the server answers the Range with a 200 carrying
    # Content-Range and the tail, a 206 from byte 0, or the tail alone as a 200 under the same
    # ETag: the fetcher must never splice those in (a shorter or shifted file).
    result, _ = await _fetch(origin, path, tmp_path / "m.bin")
    assert (tmp_path / "m.bin").read_bytes() == origin.big
    assert result.sha256 == hashlib.sha256(origin.big).hexdigest()  # type: ignore[attr-defined]
    ranges = [h.range for h in origin.seen(path)]
    assert ranges == [None, f"bytes={3 << 20}-", None]


async def test_a_body_shorter_than_its_length_is_never_kept(origin: Origin, tmp_path: Path) -> None:
    """Every answer stops 1000 bytes short: resumes run out of attempts; nothing is left."""
    with pytest.raises(FetchUnavailable):
        await _fetch(origin, "/always-short", tmp_path / "m.bin", attempts=2)
    assert not (tmp_path / "m.bin").exists()
    assert origin.seen("/always-short")[1].range == f"bytes={len(origin.data) - 1000}-"


async def test_a_trickle_fails_after_one_window_without_a_retry(
    origin: Origin, tmp_path: Path
) -> None:
    """1 KiB then a byte every 0.2 s: Stalled after the 1 s window, asked once, nothing left."""
    pace = Pace(min_rate=64 * 1024, window=1.0)
    with pytest.raises(Stalled, match=r"below the minimum 64\.0 KiB/s"):
        await _fetch(origin, "/trickle", tmp_path / "m.bin", pace=pace, read_timeout=30.0)
    assert len(origin.seen("/trickle")) == 1
    assert not (tmp_path / "m.bin").exists()


@pytest.mark.parametrize(
    ("written", "sent"),
    [
        ("/credit model.bin", "/credit%20model.bin"),  # raw, as a registry may write it
        ("/credit%20model.bin", "/credit%20model.bin"),  # already encoded: sent as written
        ("/mod\u00e8le.bin", "/mod%C3%A8le.bin"),
        ("/mod%C3%A8le.bin", "/mod%C3%A8le.bin"),
    ],
)
async def test_names_with_spaces_and_accents_are_fetched(
    origin: Origin, tmp_path: Path, written: str, sent: str
) -> None:
    """A path with a space or non-ASCII letter is percent-encoded once, and served."""
    await _fetch(origin, written, tmp_path / "m.bin")
    assert (tmp_path / "m.bin").read_bytes() == origin.data
    assert [hit.raw for hit in origin.hits] == [sent]
