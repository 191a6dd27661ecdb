"""Registrar for the MLflow Model Registry (``mlflow+http(s)://host[:port][/prefix]``), over REST.

MLflow numbers a model's versions itself, so the pipeline's version name travels as the
model-version tag ``pointercache.version`` and the registration's key as
``pointercache.idempotency_key``. One registration (MLflow REST API 2.0,
https://mlflow.org/docs/latest/rest-api.html):

1. ``registered-models/get``; on ``RESOURCE_DOES_NOT_EXIST``, ``registered-models/create``
   (``RESOURCE_ALREADY_EXISTS`` from a concurrent creator is fine).
2. ``model-versions/search`` for ``tags.pointercache.version = <version>``: a version carrying
   our key means it is already registered (a retry after a lost answer: nothing is created);
   one carrying another key is a ``RegistrationConflict``.
3. Otherwise ``model-versions/create`` with ``source = uri`` and every tag in the same request
   (key, version, ``pointercache.digest``, ``pointercache.size_bytes``,
   ``pointercache.preprocessing`` from the signature, the user's tags), so a version never
   exists without its key.
4. When a version was created or the alias must move: the registered-model tag
   ``pointercache.revision`` is raised to ``max(previous + 1, epoch ms)``, then
   ``registered-models/alias`` points the alias at the version. A crash between the two raises it
   again on the retry, so the revision never stays behind an alias move.

The signature's ``inputs`` are not written (MLflow keeps them in the model's ``MLmodel`` file,
where the MLflow source reads them); its ``preprocessing`` becomes the tag. The whole call is
bounded by ``SourceOptions.timeout``. One outbox drains at a time (its drain lock): MLflow has no
conditional create, so two outboxes registering the same version at the same moment could both
create it; the key makes the duplicate visible (``pointercache outbox list`` on either side).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pointercache.adapters.http import is_transport_error, transport_error
from pointercache.adapters.mlflow import MlflowRest, integer, obj, registry_base, tags
from pointercache.base.redact import redact_uri
from pointercache.errors import NotFound, RegistrationConflict
from pointercache.model.revision import raised
from pointercache.publish.registration import Outcome, Receipt, Registration
from pointercache.resolve.sources import SourceOptions
from pointercache.resolve.sources.mlflow import (
    DIGEST_TAG,
    PREPROCESSING_TAG,
    REVISION_TAG,
    SIZE_TAG,
)

KEY_TAG = "pointercache.idempotency_key"
VERSION_TAG = "pointercache.version"
MAX_SEARCH = 100


def version_tags(registration: Registration) -> dict[str, str]:
    """Every model-version tag a registration writes (user tags, then ours)."""
    found = dict(registration.tags)
    found[KEY_TAG] = registration.key
    found[VERSION_TAG] = registration.version
    if registration.digest is not None:
        found[DIGEST_TAG] = registration.digest
    if registration.size_bytes is not None:
        found[SIZE_TAG] = str(registration.size_bytes)
    preprocessing = (registration.signature or {}).get("preprocessing")
    if preprocessing is not None:
        found[PREPROCESSING_TAG] = str(preprocessing)
    return found


class MlflowRegistrar:
    """Writes registrations to an MLflow tracking server; implements ``Registrar``."""

    def __init__(self, uri: str, options: SourceOptions | None = None) -> None:
        self.options = options or SourceOptions()
        self.name = redact_uri(uri)
        self.rest = MlflowRest(
            registry_base(uri),
            self.name,
            timeout=self.options.timeout,
            max_answer_bytes=self.options.max_manifest_bytes,
            credentials=self.options.credentials,
        )

    async def register(self, registration: Registration) -> Receipt:
        """Register idempotently (see the module docstring), within the timeout."""
        try:
            async with asyncio.timeout(self.options.timeout):
                return await self._register(registration)
        except Exception as exc:
            if not is_transport_error(exc):
                raise
            raise transport_error(exc, self.name) from exc

    async def _register(self, registration: Registration) -> Receipt:
        model = registration.model
        registered = await self._registered_model(model)
        number, created = await self._version(registration)
        aliases = {
            str(a.get("alias")): str(a.get("version"))
            for a in registered.get("aliases") or []
            if isinstance(a, dict)
        }
        alias = registration.alias
        move = alias is not None and aliases.get(alias) != number
        revision = None
        if created or move:
            tagged = tags(registered).get(REVISION_TAG)
            previous = None if tagged is None else integer(tagged, REVISION_TAG)
            revision = raised(previous, time.time_ns() // 1_000_000)
            await self.rest.post(
                "registered-models/set-tag",
                {"name": model, "key": REVISION_TAG, "value": str(revision)},
            )
        if move:
            await self.rest.post(
                "registered-models/alias", {"name": model, "alias": alias, "version": number}
            )
        return Receipt(Outcome.CREATED if created else Outcome.ALREADY, number, revision)

    async def _registered_model(self, model: str) -> dict[str, Any]:
        try:
            answer = await self.rest.call("registered-models/get", {"name": model})
        except NotFound:
            await self.rest.post_unless_exists("registered-models/create", {"name": model})
            answer = await self.rest.call("registered-models/get", {"name": model})
        return obj(answer.get("registered_model"), "registered_model")

    async def _version(self, registration: Registration) -> tuple[str, bool]:
        """(MLflow version number, True if created now) of the registration's version."""
        mine, others = await self._labelled(registration)
        if mine:
            return str(min(mine)), False
        if others:
            raise RegistrationConflict(
                f"{registration.model}: version {registration.version} is already registered"
                f" in {self.name} as MLflow version {min(others)} with another artifact"
            )
        payload = {
            "name": registration.model,
            "source": registration.uri,
            "tags": [{"key": k, "value": v} for k, v in version_tags(registration).items()],
        }
        answer = await self.rest.post("model-versions/create", payload)
        created = obj(answer.get("model_version"), "model_version")
        return str(integer(created.get("version"), "model_version.version")), True

    async def _labelled(self, registration: Registration) -> tuple[list[int], list[int]]:
        """MLflow version numbers tagged with our version name: (ours by key, others)."""
        query = f"name='{registration.model}' and tags.`{VERSION_TAG}`='{registration.version}'"
        answer = await self.rest.call(
            "model-versions/search", {"filter": query, "max_results": str(MAX_SEARCH)}
        )
        mine: list[int] = []
        others: list[int] = []
        for raw in answer.get("model_versions") or []:
            found = obj(raw, "model_versions[]")
            number = integer(found.get("version"), "model_versions[].version")
            (mine if tags(found).get(KEY_TAG) == registration.key else others).append(number)
        return mine, others

    async def aclose(self) -> None:
        """Close the HTTP session."""
        await self.rest.aclose()
