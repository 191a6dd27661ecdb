"""One status table: every HTTP-speaking caller maps a status the same way."""

from __future__ import annotations

import pytest

from pointercache.adapters.http import (
    FETCH,
    SOURCE,
    RangeMismatch,
    StatusKind,
    body_range,
    classify_status,
    status_error,
)
from pointercache.adapters.kube.errors import Gone
from pointercache.adapters.kube.errors import status_error as kube_status_error
from pointercache.errors import (
    ArtifactNotFound,
    FetchError,
    FetchUnavailable,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
    NotFound,
    SourceError,
    SourceUnavailable,
    Transient,
)

TABLE = [
    # status, kind, registry answer (source), artifact transfer (fetch), Kubernetes API
    (404, StatusKind.NOT_FOUND, NotFound, ArtifactNotFound, KubeNotFound),
    (410, StatusKind.NOT_FOUND, NotFound, ArtifactNotFound, Gone),
    (408, StatusKind.UNAVAILABLE, SourceUnavailable, FetchUnavailable, KubeUnavailable),
    (425, StatusKind.UNAVAILABLE, SourceUnavailable, FetchUnavailable, KubeUnavailable),
    (429, StatusKind.UNAVAILABLE, SourceUnavailable, FetchUnavailable, KubeUnavailable),
    (500, StatusKind.UNAVAILABLE, SourceUnavailable, FetchUnavailable, KubeUnavailable),
    (503, StatusKind.UNAVAILABLE, SourceUnavailable, FetchUnavailable, KubeUnavailable),
    (599, StatusKind.UNAVAILABLE, SourceUnavailable, FetchUnavailable, KubeUnavailable),
    (401, StatusKind.DENIED, SourceError, FetchError, KubeForbidden),
    (403, StatusKind.DENIED, SourceError, FetchError, KubeForbidden),
    (400, StatusKind.REFUSED, SourceError, FetchError, KubeError),
    (409, StatusKind.REFUSED, SourceError, FetchError, KubeConflict),
    (412, StatusKind.REFUSED, SourceError, FetchError, KubeError),
    (418, StatusKind.REFUSED, SourceError, FetchError, KubeError),
]


@pytest.mark.parametrize(("status", "kind", "source", "fetch", "kube"), TABLE)
def test_status_table(status: int, kind: StatusKind, source: type, fetch: type, kube: type) -> None:
    """Each family gets the class the table names; transient exactly when the kind is."""
    assert classify_status(status) is kind
    as_source = status_error(status, "registry", SOURCE)
    as_fetch = status_error(status, "artifact", FETCH)
    assert type(as_source) is source
    assert type(as_fetch) is fetch
    assert type(kube_status_error(status, "api")) is kube
    transient = kind is StatusKind.UNAVAILABLE
    assert isinstance(as_source, Transient) is transient
    assert isinstance(as_fetch, Transient) is transient
    assert f"HTTP {status}" in str(as_source)


def test_no_response_at_all_is_a_transient_kube_error() -> None:
    """Status 0 (no response) from the Kubernetes client is KubeUnavailable."""
    assert isinstance(kube_status_error(0, "api"), KubeUnavailable)


ETAG_TAIL = "bytes 3145728-8388607/8388608"
RANGE_TABLE = [
    # status, headers, asked_from, known_total, expected (start, length, total) or error text
    (200, {"Content-Length": "8388608"}, 0, None, (0, 8388608, 8388608)),
    (200, {}, 0, None, (0, None, None)),  # chunked: the length is not declared
    (200, {"Content-Length": "8388608"}, 3145728, 8388608, (0, 8388608, 8388608)),  # restart
    (200, {"Content-Range": ETAG_TAIL, "Content-Length": "5242880"}, 3145728, 8388608, "a 200"),
    (206, {"Content-Range": ETAG_TAIL, "Content-Length": "5242880"}, 3145728, 8388608, None),
    (206, {"Content-Range": ETAG_TAIL}, 3145728, None, (3145728, 5242880, 8388608)),
    (206, {"Content-Range": ETAG_TAIL}, 0, None, "without Range"),
    (206, {"Content-Range": "bytes 0-8388607/8388608"}, 3145728, 8388608, "from byte 0"),
    (206, {"Content-Range": "bytes 3145728-4194303/8388608"}, 3145728, 8388608, "not to the end"),
    (206, {"Content-Range": "bytes 3145728-8388607/*"}, 3145728, 8388608, "size"),
    (206, {"Content-Range": "bytes 3145728-9999999/10000000"}, 3145728, 8388608, "10000000-byte"),
    (206, {"Content-Range": ETAG_TAIL, "Content-Length": "100"}, 3145728, 8388608, "Content-Len"),
    (206, {}, 3145728, 8388608, "Content-Range 'None'"),
    (206, {"Content-Range": "bytes=3145728-"}, 3145728, 8388608, "Content-Range"),
    (200, {"Content-Length": "-1"}, 0, None, "Content-Length"),
    (200, {"Content-Length": "12, 13"}, 0, None, "Content-Length"),
    (416, {}, 3145728, 8388608, "not a body answer"),
]


@pytest.mark.parametrize(("status", "headers", "asked", "known", "expected"), RANGE_TABLE)
def test_body_range_table(
    status: int,
    headers: dict[str, str],
    asked: int,
    known: int | None,
    expected: tuple[int, int | None, int | None] | str | None,
) -> None:
    """A body is used only for the bytes its status and headers prove (RFC 9110 14.4, 15.3.7)."""
    if isinstance(expected, str):
        with pytest.raises(RangeMismatch, match=expected):
            body_range(status, headers, asked_from=asked, known_total=known)
        return
    got = body_range(status, headers, asked_from=asked, known_total=known)
    want = expected or (3145728, 5242880, 8388608)
    assert (got.start, got.length, got.total) == want


def test_body_range_reads_repeated_content_length_headers() -> None:
    """Two equal Content-Length headers are one length; two different ones are refused."""
    from multidict import CIMultiDict

    same = CIMultiDict([("Content-Length", "5"), ("Content-Length", "5")])
    assert body_range(200, same, asked_from=0, known_total=None).length == 5
    differ = CIMultiDict([("Content-Length", "5"), ("Content-Length", "6")])
    with pytest.raises(RangeMismatch):
        body_range(200, differ, asked_from=0, known_total=None)
