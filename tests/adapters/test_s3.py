"""The S3 adapter: URI parsing, error translation by code, and the conditional GET."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from pointercache.adapters import s3
from pointercache.adapters.http import FETCH, SOURCE
from pointercache.errors import (
    ArtifactNotFound,
    FetchError,
    FetchUnavailable,
    ForbiddenURI,
    NotFound,
    SourceError,
    SourceUnavailable,
    TooLarge,
)
from tests.servers import MotoServer


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://models/recommender/8/", ("models", "recommender/8/")),
        ("s3://models/m.json", ("models", "m.json")),
        ("s3://models", ("models", "")),
        ("S3://models/a", ("models", "a")),
    ],
)
def test_parse_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    """Plain S3 URIs split into bucket and key."""
    assert s3.parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "https://models/a",
        "s3://user@models/a",
        "s3://models:9000/a",
        "s3://models/a?versionId=1",
        "s3://models/a#frag",
        "s3://Models/a",
        "s3://m/a",
        "s3://models/../etc",
        "s3://models//abs",
        "s3://models/a/./b",
    ],
)
def test_parse_s3_uri_refuses_odd_uris(uri: str) -> None:
    """Other schemes, user info, ports, queries, bad bucket names and dot segments are refused."""
    with pytest.raises(ForbiddenURI):
        s3.parse_s3_uri(uri)


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


@pytest.mark.parametrize(
    ("exc", "fetch_error", "source_error"),
    [
        (_client_error("NoSuchKey", 404), ArtifactNotFound, NotFound),
        (_client_error("404", 404), ArtifactNotFound, NotFound),
        (_client_error("SlowDown", 503), FetchUnavailable, SourceUnavailable),
        (_client_error("InternalError", 500), FetchUnavailable, SourceUnavailable),
        (_client_error("AccessDenied", 403), FetchError, SourceError),
        (_client_error("InvalidRequest", 400), FetchError, SourceError),
        (
            EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
            FetchUnavailable,
            SourceUnavailable,
        ),
        (NoCredentialsError(), FetchError, SourceError),
    ],
)
def test_translate_by_code(exc: Exception, fetch_error: type, source_error: type) -> None:
    """Errors map by status and code into the caller's family (fetch or source)."""
    as_fetch = s3.translate(exc, "s3://b/k", FETCH)
    as_source = s3.translate(exc, "s3://b/k", SOURCE)
    assert type(as_fetch) is fetch_error
    assert type(as_source) is source_error


def test_translate_keeps_our_errors() -> None:
    """A pointercache error passes through translate unchanged."""
    err = TooLarge("big")
    assert s3.translate(err, "s3://b/k", SOURCE) is err


def test_get_object_if_changed(moto_env: MotoServer) -> None:
    """The conditional GET returns the body and ETag, then None while the ETag still matches."""
    bucket = moto_env.new_bucket()
    moto_env.client().put_object(Bucket=bucket, Key="m.json", Body=b'{"schema": 1}')
    client = s3.client()
    body, etag = s3.get_object_if_changed(client, bucket, "m.json", None, 1024)
    assert body == b'{"schema": 1}'
    assert etag
    assert s3.get_object_if_changed(client, bucket, "m.json", etag, 1024) == (None, etag)
    moto_env.client().put_object(Bucket=bucket, Key="m.json", Body=b'{"schema": 2}')
    body2, etag2 = s3.get_object_if_changed(client, bucket, "m.json", etag, 1024)
    assert (body2, etag2 != etag) == (b'{"schema": 2}', True)
    with pytest.raises(TooLarge):
        s3.get_object_if_changed(client, bucket, "m.json", None, 4)
