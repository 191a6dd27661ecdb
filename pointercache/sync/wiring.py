"""The composition root: build every runtime object from validated ``Settings``, once.

Nothing below this module reads ``Settings``: each object gets a typed option group
(``SourceOptions``, ``FetchOptions``, a ``SignatureGate``, a ``Target``) or plain arguments.
Both roles call ``build``; the entrypoints add their role's own groups (the init deadline, the
sidecar's poll and server options).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pointercache.adapters.http import Credentials
from pointercache.errors import ConfigError, PointercacheError
from pointercache.model.candidate import Candidate, Selector
from pointercache.model.pointer import check_digest
from pointercache.resolve.chain import Chain
from pointercache.resolve.sources import CheckingSource, Source, SourceOptions, open_source
from pointercache.stage.fetchers import FetchOptions
from pointercache.sync.settings import Settings
from pointercache.volume.cas import NodeCache
from pointercache.volume.lkg import NodeLKG
from pointercache.volume.store import Store

if TYPE_CHECKING:
    from pointercache.adapters.kube.config import KubeConfig
    from pointercache.model.signature import SignatureGate


@dataclass(frozen=True, slots=True)
class Target:
    """What a pod serves: one registered model, chosen by one selector."""

    model: str
    """Registered model name (``--model``)."""
    selector: Selector
    """Which of its versions (``--selector``)."""


@dataclass(frozen=True, slots=True)
class Parts:
    """Everything the shared resolve → stage → publish path needs, wired once."""

    target: Target
    store: Store
    """The shared volume."""
    lkg: NodeLKG | None
    """Node LKG pointers (``--lkg-dir``), or None."""
    cache: NodeCache | None
    """The node's content-addressed artifact cache (``--lkg-dir``), or None."""
    cluster_lkg_dir: Path | None
    """The mounted cluster LKG ConfigMap (``--lkg-cluster-dir``, init only), or None."""
    sources: tuple[Source, ...]
    """The registries, in order."""
    chain: Chain
    fetch: FetchOptions
    gate: SignatureGate | None
    """The signature gate (``--expect-signature``), or None when it is off."""

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


def signature_gate(settings: Settings) -> SignatureGate | None:
    """The gate ``--expect-signature`` asks for (loaded and validated now), or None."""
    if settings.expect_signature is None:
        return None
    from pointercache.model.signature import SignatureGate, load_expected

    return SignatureGate(
        load_expected(settings.expect_signature),
        mode=settings.signature_mode,
        unsigned=settings.unsigned_model,
    )


def check_selectors(sources: tuple[Source, ...], settings: Settings) -> None:
    """Ask each registry that can tell whether it accepts ``--selector`` and
    ``--prefetch-selector``; ``ConfigError`` (exit 2) naming the flag if one never can."""
    flags = [("--selector", settings.selector)]
    if settings.prefetch_selector is not None:
        flags.append(("--prefetch-selector", settings.prefetch_selector))
    for source in sources:
        if not isinstance(source, CheckingSource):
            continue
        for flag, selector in flags:
            try:
                source.check_selector(selector)
            except ConfigError as exc:
                raise ConfigError(f"{flag} {selector}: {exc}") from None


def _check_secret(path: Path | None, flag: str) -> None:
    if path is not None and not path.is_file():
        raise ConfigError(f"{flag} {path}: not a readable file")


def build(settings: Settings, *, kube: KubeConfig | None = None) -> Parts:
    """Wire store, node LKG and cache, sources and the chain; ``ConfigError`` on bad settings.

    ``kube`` says how to reach the Kubernetes API (built by the entrypoint from the process
    environment); only ``configmap://`` sources use it.
    """
    _check_secret(settings.registry_token_file, "--registry-token-file")
    _check_secret(settings.registry_basic_auth_file, "--registry-basic-auth-file")
    source_options = SourceOptions(
        timeout=settings.registry_timeout,
        credentials=Credentials(
            token_file=settings.registry_token_file,
            basic_auth_file=settings.registry_basic_auth_file,
        ),
        kube=kube,
    )
    sources = tuple(open_source(uri, source_options) for uri in settings.registry)
    check_selectors(sources, settings)
    lkg = cache = None
    if settings.lkg_dir is not None:
        lkg = NodeLKG(settings.lkg_dir)
        cache = NodeCache(
            settings.lkg_dir, max_bytes=settings.cache_max_bytes, protected=lkg.referenced_digests
        )
    gate = signature_gate(settings)
    chain = Chain(
        sources=sources,
        lkg=lkg,
        cluster_lkg_dir=settings.lkg_cluster_dir,
        pinned=pinned_candidate(settings),
        timeout=settings.registry_timeout,
    )
    return Parts(
        target=Target(settings.model, settings.selector),
        store=Store(settings.root, keep_versions=settings.keep_versions),
        lkg=lkg,
        cache=cache,
        cluster_lkg_dir=settings.lkg_cluster_dir,
        sources=sources,
        chain=chain,
        fetch=fetch_options(settings, source_options),
        gate=gate,
    )
