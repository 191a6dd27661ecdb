"""The S3 adapter: the only module that imports boto3/botocore (lazily, on first use).

Everything S3-specific the rest of pointercache needs lives here: URI parsing, building a client
with the standard credential chain (environment, shared config, web identity / IRSA, instance
metadata), translating botocore errors into the pointercache tree by HTTP status and error code,
and the conditional GET used by S3 manifest sources. ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``) is read by boto3 itself, so S3-compatible stores and test servers work
without code here. boto3 is blocking: callers run these functions in a thread.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlsplit

from pointercache.adapters.http import ErrorFamily, StatusKind, classify_status
from pointercache.base.redact import redact_uri
from pointercache.errors import ConfigError, ForbiddenURI, PointercacheError, TooLarge

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "InternalError",
        "PriorDownload",
        "PreconditionFailed",
        "412",
        "500",
        "502",
        "503",
        "504",
    }
)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into (bucket, key); the key may be empty (a whole bucket).

    ``ForbiddenURI`` for anything that is not a plain S3 URI: another scheme, user info, a port,
    a query or fragment, an invalid bucket name, a key starting with ``/`` or with ``.``/``..``
    segments.
    """
    shown = redact_uri(uri)
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise ForbiddenURI(f"unparseable S3 URI {shown}") from exc
    if parts.scheme.lower() != "s3":
        raise ForbiddenURI(f"not an S3 URI: {shown}")
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise ForbiddenURI(f"S3 URI with query, fragment, user info or port: {shown}")
    bucket, key = parts.netloc, parts.path.removeprefix("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ForbiddenURI(f"invalid S3 bucket name in {shown}")
    if key.startswith("/") or any(seg in {".", ".."} for seg in key.split("/")):
        raise ForbiddenURI(f"S3 key with '/', '.' or '..' segments: {shown}")
    return bucket, key


def parse_manifest_uri(uri: str, flag: str) -> tuple[str, str]:
    """``parse_s3_uri`` for a manifest object: (bucket, key) of ``s3://bucket/key.json``.

    ``ConfigError`` naming ``flag`` (``registry``, ``--registry``) for a URI ``parse_s3_uri``
    refuses, or one without a key (a bucket or a prefix is not a manifest).
    """
    shown = redact_uri(uri)
    try:
        bucket, key = parse_s3_uri(uri)
    except ForbiddenURI as exc:
        raise ConfigError(f"{flag} {shown}: {exc}") from exc
    if not key or key.endswith("/"):
        raise ConfigError(f"{flag} {shown}: expected s3://bucket/key.json")
    return bucket, key


def client(
    *,
    endpoint_url: str | None = None,
    max_pool: int = 16,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
    max_attempts: int = 3,
    lean_reads: bool = False,
) -> Any:
    """Build an S3 client with the standard credential chain and bounded timeouts.

    ``endpoint_url`` overrides ``AWS_ENDPOINT_URL`` (which boto3 honours by itself).
    ``max_attempts`` is botocore's total attempts per call (1 = no botocore retries; the S3
    fetcher retries parts itself). ``lean_reads`` is for a caller that builds every parameter
    itself and hashes every byte it reads with sha256 (the S3 fetcher): it turns off botocore's
    parameter validation and its response checksum (``response_checksum_validation=
    "when_required"``: no CRC over every byte of a GET on top of our sha256); a per-request
    cost that counts on many small objects. ``ConfigError`` if boto3 cannot build a client (bad
    region or endpoint settings).
    """
    import boto3.session
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    config = Config(
        max_pool_connections=max_pool,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        user_agent_extra="pointercache",
        **(
            {"parameter_validation": False, "response_checksum_validation": "when_required"}
            if lean_reads
            else {}
        ),
    )
    try:
        return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
    except (BotoCoreError, ValueError) as exc:
        raise ConfigError(f"cannot build an S3 client: {type(exc).__name__}") from exc


def error_code(exc: BaseException) -> tuple[str, int | None]:
    """(error code, HTTP status) of a botocore ``ClientError``; ("", None) for anything else."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", None
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status if isinstance(status, int) else None


def translate(exc: BaseException, uri: str, family: ErrorFamily) -> PointercacheError:
    """Map a boto3/botocore exception to ``family`` (``adapters.http.SOURCE`` or ``FETCH``).

    S3 error codes first (NoSuchKey/NoSuchBucket → not found; SlowDown, throttling,
    PreconditionFailed → unavailable; AccessDenied, bad or expired credentials → failed), then
    the HTTP status through the shared table (``adapters.http.classify_status``). Timeouts,
    connection and streaming errors → unavailable; missing credentials and anything else →
    failed. A ``PointercacheError`` is returned unchanged. The message carries the redacted URI
    and the error code, never the server's text.
    """
    if isinstance(exc, PointercacheError):
        return exc
    from botocore import exceptions as bce

    shown = redact_uri(uri)
    if isinstance(exc, bce.ClientError):
        return _translate_client_error(exc, shown, family)
    transient = (
        bce.ConnectionError,
        bce.HTTPClientError,
        bce.ResponseStreamingError,
        bce.IncompleteReadError,
        bce.CredentialRetrievalError,
        OSError,
        TimeoutError,
    )
    if isinstance(exc, transient):
        return family.unavailable(f"S3 unavailable for {shown}: {type(exc).__name__}")
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return family.failed(f"no usable AWS credentials for {shown}: {type(exc).__name__}")
    return family.failed(f"S3 request for {shown} failed: {type(exc).__name__}")


def _translate_client_error(
    exc: BaseException, shown: str, family: ErrorFamily
) -> PointercacheError:
    code, status = error_code(exc)
    label = f"{code or '?'} (HTTP {status})"
    if code in _NOT_FOUND_CODES:
        kind = StatusKind.NOT_FOUND
    elif code in _DENIED_CODES:
        kind = StatusKind.DENIED
    elif code in _TRANSIENT_CODES:
        kind = StatusKind.UNAVAILABLE
    else:
        kind = classify_status(status) if status is not None else StatusKind.REFUSED
    return family.for_kind(kind)(f"S3 {kind.value} for {shown}: {label}")


def read_some(body: Any, size: int) -> bytes:
    """Up to ``size`` bytes of a streaming body, as soon as any have arrived; b"" at the end.

    botocore's ``StreamingBody.read(size)`` returns only once ``size`` bytes (or the end) have
    arrived — urllib3 → ``http.client`` → ``io.BufferedReader.read`` loop until the buffer is
    full — so a server that trickles a byte every few seconds holds it for days, and every
    socket read inside it stays under the read timeout. ``read1`` of the urllib3 response under
    it (urllib3 ≥ 2) does one socket read at most, so the caller sees every chunk as it comes
    and its pace meter can judge the transfer. Without it (another HTTP stack under botocore)
    this falls back to ``read``. Errors are raised as ``StreamingBody.read`` raises them
    (botocore's ``ReadTimeoutError``/``ResponseStreamingError``), for ``translate``.
    """
    raw = getattr(body, "_raw_stream", None)
    read1 = getattr(raw, "read1", None)
    if read1 is None:
        data: bytes = body.read(size)
        return data
    from botocore.exceptions import ReadTimeoutError, ResponseStreamingError
    from urllib3.exceptions import ProtocolError
    from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeout

    try:
        chunk: bytes = read1(size)
    except Urllib3ReadTimeout as exc:
        raise ReadTimeoutError(endpoint_url=exc.url, error=exc) from exc
    except ProtocolError as exc:
        raise ResponseStreamingError(error=exc) from exc
    return chunk


def get_object_if_changed(
    client: Any,
    bucket: str,
    key: str,
    etag: str | None,
    max_bytes: int,
    *,
    deadline: float | None = None,
) -> tuple[bytes | None, str | None]:
    """GET a small object unless its ETag is still ``etag``: (body, etag), or (None, etag) on 304.

    Raises ``TooLarge`` when the object is over ``max_bytes``, ``TimeoutError`` when the body is
    still arriving at ``deadline`` (``time.monotonic()``; a server that trickles), and otherwise
    the raw boto3/botocore exception — pass it to ``translate`` with the caller's error family.
    """
    from botocore.exceptions import ClientError

    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if etag:
        kwargs["IfNoneMatch"] = etag
    shown = f"s3://{bucket}/{key}"
    try:
        response = client.get_object(**kwargs)
    except ClientError as exc:
        code, status = error_code(exc)
        if status == 304 or code in {"304", "NotModified"}:  # noqa: PLR2004
            return None, etag
        raise
    body = response["Body"]
    try:
        if int(response.get("ContentLength") or 0) > max_bytes:
            raise TooLarge(f"{shown} is over {max_bytes} bytes")
        data = _read_bounded(body, max_bytes + 1, deadline)
    finally:
        body.close()
    if len(data) > max_bytes:
        raise TooLarge(f"{shown} is over {max_bytes} bytes")
    new_etag = response.get("ETag")
    return data, str(new_etag) if new_etag else None


def _read_bounded(body: Any, limit: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < limit:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"body not complete after its deadline ({got} bytes)")
        chunk = read_some(body, min(64 << 10, limit - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
"""Answers of a conditional write that lost the race (S3: 412, or 409 while another conditional
write to the key is in flight)."""
PROBE_SUFFIX = ".pointercache-conditional-write-probe"
"""Key suffix of the small object ``conditional_writes_supported`` creates once."""


def get_object_with_etag(
    client: Any, bucket: str, key: str, max_bytes: int
) -> tuple[bytes | None, str | None]:
    """GET a small object: (body, ETag), or (None, None) if the key does not exist.

    Raises ``TooLarge`` past ``max_bytes``; other failures are raw boto3/botocore exceptions
    (pass them to ``translate``).
    """
    from botocore.exceptions import ClientError

    try:
        return get_object_if_changed(client, bucket, key, None, max_bytes)
    except ClientError as exc:
        code, status = error_code(exc)
        if code in {"NoSuchKey", "404", "NotFound"} or status == 404:  # noqa: PLR2004
            return None, None
        raise


def put_object_conditional(
    client: Any, bucket: str, key: str, body: bytes, *, etag: str | None
) -> str:
    """PUT ``body`` only if the object is still the one with ``etag`` (None: only if absent).

    S3 conditional writes (``If-Match`` / ``If-None-Match: *`` on PutObject,
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html): a 412
    PreconditionFailed or 409 ConditionalRequestConflict means another writer changed the key
    first, raised as ``ConcurrentUpdate``. Returns the new ETag. Other failures are raw
    boto3/botocore exceptions.
    """
    from botocore.exceptions import ClientError

    from pointercache.errors import ConcurrentUpdate

    condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        response = client.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType="application/json", **condition
        )
    except ClientError as exc:
        code, status = error_code(exc)
        if code in _CONFLICT_CODES or status in {409, 412}:
            raise ConcurrentUpdate(f"s3://{bucket}/{key} changed meanwhile ({code})") from exc
        raise
    return str(response.get("ETag") or "")


def conditional_writes_supported(client: Any, bucket: str, key: str) -> bool:
    """Tell whether the store refuses a PutObject whose ``If-None-Match: *`` does not hold.

    Puts a small probe object at ``key + PROBE_SUFFIX`` with ``If-None-Match: *`` twice: a store
    that honours conditional writes refuses (412) at the latest the second time; one that ignores
    the header accepts both, and writing a manifest there could silently lose another writer's
    change. A 501 (the header is not implemented) also means no. Other failures are raw
    boto3/botocore exceptions.
    """
    from botocore.exceptions import ClientError

    from pointercache.errors import ConcurrentUpdate

    for _ in range(2):
        try:
            put_object_conditional(
                client, bucket, key + PROBE_SUFFIX, b"conditional write probe\n", etag=None
            )
        except ConcurrentUpdate:
            return True
        except ClientError as exc:
            if error_code(exc)[1] == 501:  # noqa: PLR2004
                return False
            raise
    return False
