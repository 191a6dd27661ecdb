"""How pointercache reaches the Kubernetes API server: ``KubeConfig``, built once at the edge.

In-cluster (service account), a kubeconfig file, or an explicit API URL (``kubectl proxy``,
tests). It travels to the ConfigMap source as ``kube.*`` entries of ``SourceOptions.extra``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pointercache.errors import ConfigError

_EXTRA_PREFIX = "kube."


@dataclass(frozen=True, slots=True)
class KubeConfig:
    """How to reach the API server; built once by the entrypoint."""

    in_cluster: bool = False
    """Use the pod's service account (the CLI sets it when KUBERNETES_SERVICE_HOST is set)."""
    kubeconfig: Path | None = None
    """Kubeconfig file when not in cluster (None: the client's default, ~/.kube/config)."""
    context: str | None = None
    """Kubeconfig context (None: the current context)."""
    host: str | None = None
    """Explicit API URL without credentials (``kubectl proxy``, tests); wins over the rest."""
    request_timeout: float = 5.0
    """Seconds one API call may take (read timeout); watches use their own, longer one."""
    connect_timeout: float = 2.0
    """Seconds to establish a connection to the API server."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **fields: Any) -> KubeConfig:
        """In-cluster when ``environ`` (passed in by the CLI) has KUBERNETES_SERVICE_HOST."""
        return cls(in_cluster=bool(environ.get("KUBERNETES_SERVICE_HOST")), **fields)

    def to_extra(self) -> dict[str, str]:
        """Encode as ``SourceOptions.extra`` entries (``kube.*`` keys) for the ConfigMap source."""
        extra = {
            "kube.in_cluster": "true" if self.in_cluster else "false",
            "kube.request_timeout": str(self.request_timeout),
            "kube.connect_timeout": str(self.connect_timeout),
        }
        for key in ("kubeconfig", "context", "host"):
            value = getattr(self, key)
            if value is not None:
                extra[_EXTRA_PREFIX + key] = str(value)
        return extra

    @classmethod
    def from_extra(cls, extra: Mapping[str, str]) -> KubeConfig:
        """Decode ``kube.*`` entries of ``SourceOptions.extra`` (absent keys keep defaults)."""
        get = extra.get
        try:
            return cls(
                in_cluster=get("kube.in_cluster", "false").lower() in {"1", "true", "yes"},
                kubeconfig=Path(get("kube.kubeconfig", "")) if get("kube.kubeconfig") else None,
                context=get("kube.context") or None,
                host=get("kube.host") or None,
                request_timeout=float(get("kube.request_timeout", "5")),
                connect_timeout=float(get("kube.connect_timeout", "2")),
            )
        except ValueError as exc:
            raise ConfigError(f"kube settings: {exc}") from exc
