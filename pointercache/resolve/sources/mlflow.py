"""``mlflow+http(s)://host:port[/prefix]``: the MLflow Model Registry, over its REST API.

No ``mlflow`` import: the REST API is called directly with aiohttp, not imported with this module:
while it is not loaded, the source probes the tracking server over TCP first
(``pointercache.adapters.http.Preflight``), so an unreachable registry fails over to the LKG
without paying the import (~0.4 s). A resolution is:

- ``alias:NAME``   → ``registered-models/alias``; ``version:N`` → ``model-versions/get``;
  ``stage:NAME``   → ``registered-models/get-latest-versions`` (deprecated MLflow stages),
  each in parallel with ``registered-models/get`` (for the revision tag, below);
- only ``READY`` versions are served: ``PENDING_REGISTRATION`` → ``SourceUnavailable`` (it will
  be ready soon: keep the LKG meanwhile); ``FAILED_REGISTRATION`` → ``NotFound``;
- ``model-versions/get-download-uri`` is read once per (model, version, source) and cached: a
  steady-state poll is two parallel GETs;
- the version's ``MLmodel`` file (its ``signature:`` block) is not read here, within the
  registry timeout: the candidate names it (``signature_from``) and the stage layer reads it
  through the store that holds the artifact (S3, HTTP, the artifact proxy) before the weights;
- ``runs:/``, ``models:/`` and ``mlflow-artifacts:/`` locations are resolved through the tracking
  server into a fetchable URI (``mlflow-artifacts+http(s)://host:port/<path>`` for the artifact
  proxy, see ``pointercache.stage.fetchers.mlflow``); ``s3://``, ``http(s)://`` pass through.

Model-version tags, all optional: ``pointercache.digest`` (``sha256:<hex>``) and
``pointercache.size_bytes`` (enforced when present), ``pointercache.preprocessing`` (added to
the signature read from ``MLmodel``).

Revision: MLflow has none, and setting an alias changes no timestamp. The registered-model tag
``pointercache.revision`` (an integer up to 2**63-1; use epoch milliseconds) is this registry's
claim when set — promotion tooling bumps it on every alias move. Without it the answer has no
revision (0): nothing is made up from a clock, so no node's clock can pin a pod to an answer
(``model.revision``). A version number is no stand-in either: it goes *down* on a rollback.

Errors are mapped by MLflow ``error_code`` and HTTP status, never by message text.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from pointercache.adapters.http import (
    Credentials,
    Preflight,
    is_transport_error,
    load_aiohttp,
    transport_error,
)
from pointercache.adapters.mlflow import (
    MlflowRest,
    integer,
    obj,
    string,
    tags,
)
from pointercache.base.redact import redact_uri
from pointercache.errors import (
    ConfigError,
    InvalidManifest,
    InvalidPointer,
    NotFound,
    SourceUnavailable,
)
from pointercache.model.candidate import Candidate, Selector
from pointercache.model.pointer import check_digest, check_revision
from pointercache.resolve.sources import SourceOptions

DIGEST_TAG = "pointercache.digest"
SIZE_TAG = "pointercache.size_bytes"
REVISION_TAG = "pointercache.revision"
PREPROCESSING_TAG = "pointercache.preprocessing"
MAX_HOPS = 4
DETAILS_CACHE = 64
_ALIAS = re.compile(r"[\w-]{1,255}")
"""MLflow's alias names (``_REGISTERED_MODEL_ALIAS_REGEX`` and its length limit)."""
_STAGES = frozenset({"none", "staging", "production", "archived"})


class MlflowSource:
    """The MLflow Model Registry; implements ``Source``. One ``ClientSession`` per source."""

    def __init__(self, uri: str, options: SourceOptions | None = None) -> None:
        self.options = options or SourceOptions()
        self.name = redact_uri(uri)
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        if scheme not in ("mlflow+http", "mlflow+https") or not parts.hostname:
            raise ConfigError(f"registry {self.name}: expected mlflow+http(s)://host[:port]")
        if "@" in parts.netloc or parts.query or parts.fragment:
            raise ConfigError(
                f"registry {self.name}: no user info, query or fragment (use the token file)"
            )
        self.http_scheme = scheme.removeprefix("mlflow+")
        self.netloc = parts.netloc
        self.prefix = parts.path.rstrip("/")
        self.base = f"{self.http_scheme}://{self.netloc}{self.prefix}"
        self.rest = MlflowRest(
            self.base,
            self.name,
            timeout=self.options.timeout,
            max_answer_bytes=self.options.max_manifest_bytes,
            credentials=self.options.credentials,
        )
        self._preflight = Preflight(self.base, self.options.timeout, self.name)
        self._details: OrderedDict[tuple[str, str, str], str] = OrderedDict()

    def check_selector(self, selector: Selector) -> None:
        """``ConfigError`` for a selector MLflow never answers (``CheckingSource``).

        MLflow versions are integers; aliases are ``[\\w-]`` (``mlflow.utils.validation``);
        stages are ``None``, ``Staging``, ``Production`` or ``Archived`` in any case.
        """
        value = selector.value
        if selector.kind == "version" and not value.isdigit():
            raise ConfigError(f"MLflow versions are integers, not {value!r}")
        if selector.kind == "alias" and not _ALIAS.fullmatch(value):
            raise ConfigError(f"MLflow aliases are letters, digits, '_' and '-', not {value!r}")
        if selector.kind == "stage" and value.lower() not in _STAGES:
            raise ConfigError(f"MLflow stages are None, Staging, Production, Archived: {value!r}")

    # -- resolution -----------------------------------------------------------------------

    async def resolve(self, model: str, selector: Selector) -> Candidate:
        """Ask the registry which version ``selector`` names; bounded by the source timeout."""
        try:
            async with asyncio.timeout(self.options.timeout) as deadline:
                await self._preflight.check()
                load_aiohttp(deadline)
                return await self._resolve(model, selector)
        except Exception as exc:
            if not is_transport_error(exc):
                raise
            raise transport_error(exc, self.name) from exc

    async def _resolve(self, model: str, selector: Selector) -> Candidate:
        results = await asyncio.gather(
            self._model_version(model, selector),
            self.rest.call("registered-models/get", {"name": model}),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        mv = obj(results[0], "model_version")
        rm = obj(obj(results[1], "answer").get("registered_model"), "registered_model")
        version = _ready_version(model, selector, mv)
        version_tags = tags(mv)
        uri = await self._version_details(model, version, str(mv.get("source")))
        digest, size = _digest(version_tags.get(DIGEST_TAG)), _size(version_tags.get(SIZE_TAG))
        try:
            return Candidate(
                model=model,
                version=version,
                uri=uri,
                digest=digest,
                size_bytes=size,
                revision=_revision(rm),
                registry=self.name,
                signature_from=f"{uri.rstrip('/')}/MLmodel",
                preprocessing=version_tags.get(PREPROCESSING_TAG),
            )
        except (InvalidPointer, ValueError) as exc:
            raise InvalidManifest(f"{self.name}: {model} version {version!r}: {exc}") from exc

    async def _model_version(self, model: str, selector: Selector) -> dict[str, Any]:
        try:
            return await self._selected(model, selector)
        except NotFound as exc:  # name the model and selector, not the endpoint
            raise NotFound(f"{self.name}: model {model!r} has no {selector} ({exc})") from exc

    async def _selected(self, model: str, selector: Selector) -> dict[str, Any]:
        if selector.kind == "alias":
            data = await self.rest.call(
                "registered-models/alias", {"name": model, "alias": selector.value}
            )
            return obj(data.get("model_version"), "model_version")
        if selector.kind == "version":
            data = await self.rest.call(
                "model-versions/get", {"name": model, "version": selector.value}
            )
            return obj(data.get("model_version"), "model_version")
        data = await self.rest.call(
            "registered-models/get-latest-versions", {"name": model, "stages": selector.value}
        )
        found = [obj(v, "model_versions[]") for v in data.get("model_versions") or []]
        if not found:
            raise NotFound(f"{self.name}: {model} has no version in stage {selector.value!r}")
        return max(found, key=lambda v: integer(v.get("version"), "version"))

    async def _version_details(self, model: str, version: str, source: str) -> str:
        """Fetchable URI of a version; cached (a version's source never changes)."""
        key = (model, version, source)
        cached = self._details.get(key)
        if cached is not None:
            return cached
        data = await self.rest.call(
            "model-versions/get-download-uri",
            {"name": model, "version": version},
            invalid=InvalidManifest,
        )
        details = await self._fetchable(string(data.get("artifact_uri"), "artifact_uri"), 0)
        self._details[key] = details
        while len(self._details) > DETAILS_CACHE:
            self._details.popitem(last=False)
        return details

    async def _fetchable(self, location: str, hops: int) -> str:
        """Turn an MLflow artifact location into a URI a fetcher serves."""
        if hops > MAX_HOPS:
            raise InvalidManifest(f"{self.name}: artifact location loops ({redact_uri(location)})")
        parts = urlsplit(location)
        scheme, path = parts.scheme.lower(), parts.path
        if scheme == "mlflow-artifacts":
            if self.prefix:
                raise InvalidManifest(f"{self.name}: artifact proxy behind a path prefix")
            netloc = parts.netloc or self.netloc
            return f"mlflow-artifacts+{self.http_scheme}://{netloc}/{quote(path.lstrip('/'))}"
        if scheme == "runs":
            run_id, _, rel = path.lstrip("/").partition("/")
            data = await self.rest.call("runs/get", {"run_id": run_id}, invalid=InvalidManifest)
            info = obj(obj(data.get("run"), "run").get("info"), "run.info")
            root = string(info.get("artifact_uri"), "run.info.artifact_uri").rstrip("/")
            return await self._fetchable(f"{root}/{rel}" if rel else root, hops + 1)
        if scheme == "models":
            return await self._fetchable(await self._model_location(parts.netloc + path), hops + 1)
        if scheme in ("", "file"):
            raise InvalidManifest(
                f"{self.name}: artifact location {redact_uri(location)} is local to the server"
                " (run it with --serve-artifacts)"
            )
        return location

    async def _model_location(self, ref: str) -> str:
        """Artifact location of ``models:/<name>/<version>``, ``<name>@<alias>`` or ``m-<id>``."""
        ref = ref.strip("/")
        if "/" in ref:
            name, _, version = ref.partition("/")
        elif "@" in ref:
            name, _, alias = ref.partition("@")
            data = await self.rest.call(
                "registered-models/alias", {"name": name, "alias": alias}, invalid=InvalidManifest
            )
            version = str(obj(data.get("model_version"), "model_version").get("version"))
        else:
            data = await self.rest.call(f"logged-models/{quote(ref, safe='')}", {})
            info = obj(obj(data.get("model"), "model").get("info"), "model.info")
            return string(info.get("artifact_uri"), "model.info.artifact_uri")
        data = await self.rest.call(
            "model-versions/get-download-uri",
            {"name": name, "version": version},
            invalid=InvalidManifest,
        )
        return string(data.get("artifact_uri"), "artifact_uri")

    async def aclose(self) -> None:
        """Close the HTTP session."""
        await self.rest.aclose()


def artifact_credentials(
    registries: Sequence[str], options: SourceOptions
) -> dict[str, Credentials]:
    """``FetchOptions.mlflow_auth`` for these registries: netloc → the registry's credentials.

    The ``mlflow-artifacts`` fetcher sends the registry's credentials to these hosts only.
    """
    creds: dict[str, Credentials] = {}
    for uri in registries:
        parts = urlsplit(uri)
        if parts.scheme.lower() in ("mlflow+http", "mlflow+https") and parts.netloc:
            creds[parts.netloc] = options.credentials
    return creds


def _ready_version(model: str, selector: Selector, mv: dict[str, Any]) -> str:
    """The version name of ``mv``, if it is this model's and ``READY``; else the error."""
    if mv.get("name") != model:
        raise InvalidManifest(f"MLflow answered for model {mv.get('name')!r}, not {model!r}")
    version = str(integer(mv.get("version"), "version"))
    status = mv.get("status", "READY")
    if status == "PENDING_REGISTRATION":
        raise SourceUnavailable(f"{model} version {version} ({selector}) is still registering")
    if status != "READY":
        raise NotFound(f"{model} version {version} ({selector}) is not servable: {status}")
    return version


def _digest(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_digest(f"tag {DIGEST_TAG}", value)
    except InvalidPointer as exc:
        raise InvalidManifest(str(exc)) from None


def _revision(rm: dict[str, Any]) -> int:
    """The registered model's ``pointercache.revision`` tag; 0 (no claim) without one."""
    tagged = tags(rm).get(REVISION_TAG)
    if tagged is None:
        return 0
    value = integer(tagged, f"registered-model tag {REVISION_TAG}")
    try:
        return check_revision(f"registered-model tag {REVISION_TAG}", value)
    except InvalidPointer as exc:
        raise InvalidManifest(str(exc)) from None


def _size(value: str | None) -> int | None:
    return None if value is None else integer(value, f"tag {SIZE_TAG}")
