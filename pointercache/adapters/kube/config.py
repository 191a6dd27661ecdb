"""How pointercache reaches the Kubernetes API server: ``KubeConfig``, built once at the edge.

In-cluster (service account), a kubeconfig file, or an explicit API URL (``kubectl proxy``,
tests). It travels to the ConfigMap source as ``SourceOptions.kube``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
