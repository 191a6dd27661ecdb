"""Fixtures of the fetch tests: moto's S3 server, boto3 pointed at it, and an allow policy."""

from __future__ import annotations

from pointercache.errors import ForbiddenURI
from pointercache.fetchers import AllowPolicy
from tests.servers import moto_env, moto_server, private_moto

__all__ = ["allow", "moto_env", "moto_server", "private_moto"]


class PrefixPolicy:
    """Test-only policy: a URI is allowed only if it starts with one of the prefixes."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        self.prefixes = prefixes
        self.checked: list[str] = []

    def check(self, uri: str) -> None:
        """Raise ForbiddenURI unless ``uri`` starts with an allowed prefix."""
        self.checked.append(uri)
        if not uri.startswith(self.prefixes):
            raise ForbiddenURI(f"not allowed: {uri}")


def allow(*prefixes: str) -> AllowPolicy:
    """The project's AllowList when available, else the test-only prefix policy."""
    try:
        from pointercache.allow import AllowList
    except ImportError:
        return PrefixPolicy(prefixes)
    return AllowList(list(prefixes))
