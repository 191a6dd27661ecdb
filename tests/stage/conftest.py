"""Fixtures of the fetch tests: moto's S3 server, boto3 pointed at it, and the allowlist."""

from __future__ import annotations

from pointercache.stage.allow import AllowList
from tests.servers import moto_env, moto_server, private_moto

__all__ = ["allow", "moto_env", "moto_server", "private_moto"]


def allow(*prefixes: str) -> AllowList:
    """The project's allowlist with these prefixes (loopback origins must be named in them)."""
    return AllowList(list(prefixes))
