"""Build the runtime objects from validated ``Settings`` (shared by init and sidecar)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pointercache.adapters.http import Credentials
from pointercache.errors import ConfigError, PointercacheError
from pointercache.model.candidate import Candidate
from pointercache.model.pointer import check_digest
from pointercache.resolve.chain import Chain
from pointercache.resolve.sources import Source, SourceOptions, open_source
from pointercache.stage.fetchers import FetchOptions
from pointercache.sync.settings import Settings
from pointercache.volume.lkg import NodeLKG
from pointercache.volume.store import Store

if TYPE_CHECKING:
    from pointercache.adapters.kube.client import KubeConfig
    from pointercache.model.signature import Signature


@dataclass(frozen=True, slots=True)
class Parts:
    """Everything a role needs, wired once."""

    settings: Settings
    store: Store
    lkg: NodeLKG | None
    sources: tuple[Source, ...]
    chain: Chain
    fetch: FetchOptions
    expected_signature: Signature | None

    async def aclose(self) -> None:
        """Close every source (connections, watches)."""
        for source in self.sources:
            await source.aclose()


def pinned_candidate(settings: Settings) -> Candidate | None:
    """The operator's pinned fallback, or None when not configured."""
    if not (settings.pinned_version and settings.pinned_uri):
        return None
    try:
        if settings.pinned_digest:
            check_digest("--pinned-digest", settings.pinned_digest)
        return Candidate(
            model=settings.model,
            version=settings.pinned_version,
            uri=settings.pinned_uri,
            digest=settings.pinned_digest,
            registry="pinned",
        )
    except (PointercacheError, ValueError) as exc:
        raise ConfigError(f"pinned version: {exc}") from exc


def fetch_options(settings: Settings, sources: SourceOptions) -> FetchOptions:
    """Fetch options: the ``--allow`` list, the size limit, MLflow artifact credentials."""
    from pointercache.stage.allow import AllowList

    mlflow_auth: dict[str, Credentials] = {}
    if any(uri.lower().startswith("mlflow+") for uri in settings.registry):
        from pointercache.resolve.sources.mlflow import artifact_credentials

        mlflow_auth = artifact_credentials(settings.registry, sources)
    return FetchOptions(
        allow=AllowList(settings.allow),
        max_bytes=settings.max_artifact_bytes,
        mlflow_auth=mlflow_auth,
    )


def _read_secret(path: Path | None, flag: str) -> None:
    if path is not None and not path.is_file():
        raise ConfigError(f"{flag} {path}: not a readable file")


def build(settings: Settings, *, kube: KubeConfig | None = None) -> Parts:
    """Wire store, node LKG, sources and the chain; ``ConfigError`` on bad settings.

    ``kube`` says how to reach the Kubernetes API (built by the entrypoint from the process
    environment); only ``configmap://`` sources use it.
    """
    _read_secret(settings.registry_token_file, "--registry-token-file")
    _read_secret(settings.registry_basic_auth_file, "--registry-basic-auth-file")
    source_options = SourceOptions(
        timeout=settings.registry_timeout,
        credentials=Credentials(
            token_file=settings.registry_token_file,
            basic_auth_file=settings.registry_basic_auth_file,
        ),
        kube=kube,
    )
    sources = tuple(open_source(uri, source_options) for uri in settings.registry)
    lkg = (
        NodeLKG(settings.lkg_dir, cache_max_bytes=settings.cache_max_bytes)
        if settings.lkg_dir
        else None
    )
    expected = None
    if settings.expect_signature is not None:
        from pointercache.model.signature import load_expected

        expected = load_expected(settings.expect_signature)
    chain = Chain(
        sources=sources,
        lkg=lkg,
        cluster_lkg_dir=settings.lkg_cluster_dir,
        pinned=pinned_candidate(settings),
        timeout=settings.registry_timeout,
    )
    return Parts(
        settings=settings,
        store=Store(settings.root, keep_versions=settings.keep_versions),
        lkg=lkg,
        sources=sources,
        chain=chain,
        fetch=fetch_options(settings, source_options),
        expected_signature=expected,
    )
