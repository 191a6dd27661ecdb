"""The read-modify-write rule of a manifest registration (file://, s3://, configmap://, memory://).

``apply(current, registration)`` returns the new manifest bytes (None when nothing changes) and
the receipt. The rule, in order:

1. No manifest yet: start one (schema 1, revision 0, no aliases, no versions).
2. The current manifest must validate (``pointercache.model.manifest.parse``); a malformed one is
   an ``InvalidManifest`` and is never overwritten.
3. The version is new: add it with the registration's ``idempotency_key``. The version exists
   with the same key (or, written by hand without a key, with the same URI and digest): it is
   already registered. Otherwise: ``RegistrationConflict``.
4. The alias (if any) moves to the version only once the version is in the manifest (same
   document, so readers never see an alias naming a missing version).
5. Any change raises ``revision`` by one (DESIGN §5: revision increases on every change).
"""

from __future__ import annotations

from typing import Any

import orjson

from pointercache.errors import RegistrationConflict
from pointercache.model.manifest import SCHEMA_VERSION, parse
from pointercache.model.revision import raised
from pointercache.publish.registration import Outcome, Receipt, Registration


def _empty(model: str) -> dict[str, Any]:
    return {"schema": SCHEMA_VERSION, "model": model, "revision": 0, "aliases": {}, "versions": {}}


def _same_artifact(existing: dict[str, Any], registration: Registration) -> bool:
    key = existing.get("idempotency_key")
    if key is not None:
        return bool(key == registration.key)
    return bool(
        existing.get("uri") == registration.uri and existing.get("digest") == registration.digest
    )


def apply(
    current: bytes | None, registration: Registration, *, max_bytes: int
) -> tuple[bytes | None, Receipt]:
    """Apply ``registration`` to the manifest bytes ``current`` (None: no manifest yet).

    Returns ``(new bytes or None if unchanged, Receipt)``. Raises ``InvalidManifest`` for a
    manifest that does not validate and ``RegistrationConflict`` for another artifact under the
    version.
    """
    model, version = registration.model, registration.version
    if current is None:
        doc = _empty(model)
    else:
        parse(current, model=model, max_bytes=max_bytes)
        doc = orjson.loads(current)
    versions: dict[str, Any] = doc.setdefault("versions", {})
    aliases: dict[str, Any] = doc.setdefault("aliases", {})
    existing = versions.get(version)
    changed = existing is None
    if existing is None:
        versions[version] = registration.manifest_entry()
    elif not _same_artifact(existing, registration):
        raise RegistrationConflict(
            f"{model} version {version} is already registered with another artifact"
            f" (key {existing.get('idempotency_key') or 'none'}, digest"
            f" {existing.get('digest') or 'none'})"
        )
    alias = registration.alias
    if alias is not None and aliases.get(alias) != version:
        aliases[alias] = version
        changed = True
    outcome = Outcome.CREATED if existing is None else Outcome.ALREADY
    if not changed:
        return None, Receipt(outcome, version, int(doc["revision"]))
    doc["revision"] = raised(int(doc["revision"]))
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    parse(data, model=model, max_bytes=max_bytes)  # never write what readers would refuse
    return data, Receipt(outcome, version, int(doc["revision"]))
