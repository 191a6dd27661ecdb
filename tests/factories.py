"""Test data shared by topic folders: valid objects with defaults, any field overridable."""

from __future__ import annotations

from typing import Any

from pointercache.base.clock import utcnow
from pointercache.model.pointer import Pointer


def make_pointer(**fields: Any) -> Pointer:
    """A valid schema-1 pointer; pass only the fields a test cares about."""
    values: dict[str, Any] = {
        "model": "recommender",
        "version": "1",
        "uri": "file:///models/recommender/1",
        "digest": "sha256:" + "0" * 64,
        "size_bytes": 10,
        "revision": 1,
        "signature": None,
        "source": "registry",
        "source_detail": "tests",
        "resolved_at": utcnow(),
        "registry_seen_at": None,
    }
    return Pointer(**(values | fields))
