"""Wrong values are refused before anything reaches a cluster, with a message that names them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chart.conftest import CONSUMER, EXAMPLE, render_error


def pc(**values: Any) -> dict[str, Any]:
    """Values under the library's key."""
    return {"pointercache": values}


SCHEMA_RULES = [
    pytest.param(pc(bogus=1), "additional properties 'bogus' not allowed", id="unknown-key"),
    pytest.param(
        pc(sidecar={"nativ": True}), "additional properties 'nativ' not allowed", id="typo-nested"
    ),
    pytest.param(
        pc(sidecar={"native": "yes"}), "at '/sidecar/native': got string, want boolean", id="bool"
    ),
    pytest.param(pc(sidecar={"port": 70000}), "at '/sidecar/port'", id="port-range"),
    pytest.param(pc(registryTimeout="fast"), "at '/registryTimeout'", id="number"),
    pytest.param(pc(registryTimeout=0), "at '/registryTimeout'", id="positive-timeout"),
    pytest.param(
        pc(registries="file:///m.json"),
        "at '/registries': got string, want array",
        id="registries-list",
    ),
    pytest.param(pc(registries=["ftp://host/m.json"]), "at '/registries/0'", id="registry-scheme"),
    pytest.param(pc(selector="production"), "at '/selector'", id="selector-form"),
    pytest.param(pc(logLevel="verbose"), "at '/logLevel'", id="log-level-enum"),
    pytest.param(pc(keepVersions=0), "at '/keepVersions'", id="keep-versions-min"),
    pytest.param(pc(image={"digest": "sha256:abc"}), "at '/image/digest'", id="image-digest"),
    pytest.param(pc(pinned={"digest": "md5:00"}), "at '/pinned/digest'", id="pinned-digest"),
    pytest.param(pc(nodeCache={"type": "nfs"}), "at '/nodeCache/type'", id="node-cache-type"),
    pytest.param(
        pc(nodeCache={"hostPath": "var/cache"}), "at '/nodeCache/hostPath'", id="host-path-absolute"
    ),
    pytest.param(pc(volume={"mountPath": "data"}), "at '/volume/mountPath'", id="mount-absolute"),
    pytest.param(
        pc(securityContext={"runAsNonRoot": False}),
        "at '/securityContext/runAsNonRoot'",
        id="non-root",
    ),
    pytest.param(
        pc(securityContext={"allowPrivilegeEscalation": True}),
        "at '/securityContext/allowPrivilegeEscalation'",
        id="no-escalation",
    ),
    pytest.param(
        pc(credentials={"aws": {"secretAccessKey": "hunter2"}}),
        "additional properties 'secretAccessKey' not allowed",
        id="no-inline-secret",
    ),
    pytest.param(
        pc(credentials={"registryToken": {"token": "abc"}}),
        "additional properties 'token' not allowed",
        id="no-inline-token",
    ),
    pytest.param(pc(signature={"mode": "loose"}), "at '/signature/mode'", id="signature-mode"),
    pytest.param(pc(sidecar={"staleGrace": -1}), "at '/sidecar/staleGrace'", id="stale-grace"),
    pytest.param(
        pc(signature={"unsignedModel": "warn"}),
        "at '/signature/unsignedModel'",
        id="unsigned-model-enum",
    ),
    pytest.param(
        pc(sidecar={"readyWhen": "served"}), "at '/sidecar/readyWhen'", id="ready-when-enum"
    ),
    pytest.param(
        pc(sidecar={"reload": {"onFlipUrls": "http://127.0.0.1/load"}}),
        "at '/sidecar/reload/onFlipUrls': got string, want array",
        id="hooks-list",
    ),
    pytest.param(
        pc(sidecar={"reload": {"onFlipUrls": ["unix:///run/model.sock"]}}),
        "at '/sidecar/reload/onFlipUrls/0'",
        id="hook-scheme",
    ),
    pytest.param(
        pc(sidecar={"reload": {"onFlipUrls": ["http://127.0.0.1/a b"]}}),
        "at '/sidecar/reload/onFlipUrls/0'",
        id="hook-no-space",  # the environment variable is a space-separated list
    ),
    pytest.param(
        pc(sidecar={"reload": {"loadedProbeUrl": "127.0.0.1:8080/ready"}}),
        "at '/sidecar/reload/loadedProbeUrl'",
        id="probe-scheme",
    ),
    pytest.param(
        pc(sidecar={"reload": {"timeout": 0}}), "at '/sidecar/reload/timeout'", id="reload-timeout"
    ),
    pytest.param(
        {"ingress": {"rateLimit": {"rps": 50}}},
        "additional properties 'rateLimit' not allowed",
        id="ingress-nginx-rate-limit-gone",
    ),
    pytest.param(
        {"httpRoute": {"envoyRateLimit": {"unit": "Week"}}},
        "at '/httpRoute/envoyRateLimit/unit'",
        id="envoy-rate-limit-unit",
    ),
    pytest.param(
        {"httpRoute": {"parentRefs": [{"namespace": "gateways"}]}},
        "missing property 'name'",
        id="parent-ref-needs-name",
    ),
    pytest.param(
        {"monitoring": {"podMonitor": {"interval": "30"}}},
        "at '/monitoring/podMonitor/interval'",
        id="scrape-interval-duration",
    ),
    pytest.param(
        {"replicaCount": "two"}, "at '/replicaCount': got string, want integer", id="example-type"
    ),
    pytest.param(
        {"autoscaling": {"behaviour": {}}},
        "additional properties 'behaviour'",
        id="example-unknown-key",
    ),
    pytest.param(
        {"demoModel": {"weights": {"a": "x"}}}, "at '/demoModel/weights/a'", id="example-weights"
    ),
]


@pytest.mark.parametrize(("values", "message"), SCHEMA_RULES)
def test_schema_refuses_with_a_readable_message(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    """values.schema.json refuses the value and helm's message names the path and the reason."""
    error = render_error(tmp_path, values)
    assert "values don't meet the specifications of the schema" in error
    assert message in error


GUARDS = [
    pytest.param(pc(model=""), "pointercache.model is required", id="model-required"),
    pytest.param(
        pc(registries=[], extraVolumes=[], extraVolumeMounts=[]),
        "nothing to resolve the model from",
        id="a-source-required",
    ),
    pytest.param(
        pc(pinned={"version": "3"}),
        "pinned.version and pointercache.pinned.uri go together",
        id="pinned-pair",
    ),
    pytest.param(
        pc(pinned={"digest": "sha256:" + "a" * 64}), "pinned.digest needs", id="digest-needs-pin"
    ),
    pytest.param(
        pc(registries=["mlflow+https://bob:s3cret@mlflow.example.com"]),
        "carries credentials in the URI",
        id="userinfo",
    ),
    pytest.param(
        pc(pinned={"version": "1", "uri": "https://b.s3.amazonaws.com/m?X-Amz-Signature=ab"}),
        "looks presigned",
        id="presigned",
    ),
    pytest.param(
        pc(nodeCache={"type": "hostPath"}),
        "needs pointercache.nodeCache.hostPath",
        id="host-path-missing",
    ),
    pytest.param(
        pc(nodeCache={"type": "hostPath", "hostPath": "/"}),
        "must not be the node's root",
        id="host-path-root",
    ),
    pytest.param(
        pc(sidecar={"reload": {"onFlipUrls": ["http://admin:pw@127.0.0.1:8080/load"]}}),
        "carries credentials in the URI",
        id="hook-userinfo",
    ),
    pytest.param(
        pc(nodeCache={"type": "pvc", "claimName": "c", "prepare": True}),
        "prepare is for type=hostPath only",
        id="prepare-hostpath-only",
    ),
    pytest.param(
        pc(nodeCache={"type": "pvc"}), "needs pointercache.nodeCache.claimName", id="claim-missing"
    ),
    pytest.param(pc(nodeCache={"claimName": "cache"}), "type is empty", id="type-missing"),
    pytest.param(
        pc(clusterLKG={"enabled": True}),
        "clusterLKG.mirror needs the Kubernetes API",
        id="mirror-needs-api",
    ),
    pytest.param(
        pc(nodeCache={"type": "pvc", "claimName": "c", "mountPath": "/pointercache/cache"}),
        "mount paths overlap",
        id="mount-overlap",
    ),
    pytest.param(pc(volume={"mountPath": "/tmp"}), "mount paths overlap", id="mount-on-tmp"),
    pytest.param(
        {"httpRoute": {"enabled": True}},
        "httpRoute.enabled needs httpRoute.parentRefs",
        id="route-needs-gateway",
    ),
    pytest.param(
        {"httpRoute": {"envoyRateLimit": {"enabled": True}}},
        "set httpRoute.enabled=true too",
        id="rate-limit-needs-route",
    ),
    pytest.param(
        pc(extraEnv=[{"name": "REGISTRY_PASSWORD", "value": "hunter2"}]),
        "REGISTRY_PASSWORD looks secret; use valueFrom.secretKeyRef",
        id="plain-secret-env",
    ),
    pytest.param(
        pc(extraEnv=[{"name": "POINTERCACHE_MODEL", "value": "x"}]),
        "POINTERCACHE_MODEL is set by the chart",
        id="env-clash",
    ),
    pytest.param(
        {"demoModel": {"enabled": False}},
        "demoModel.enabled=false: point pointercache.registries at your registry",
        id="demo-off",
    ),
    pytest.param(
        {"demoModel": {"enabled": False}, "pointercache": {"registries": ["s3://m/r.json"]}},
        "drop the demo-model entries",
        id="demo-off-volumes",
    ),
    pytest.param(
        {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}},
        "minReplicas must not exceed",
        id="hpa-bounds",
    ),
    pytest.param(
        pc(signature={"unsignedModel": "refuse"}),
        "unsignedModel=refuse needs pointercache.signature.configMap",
        id="refuse-needs-a-gate",
    ),
]


@pytest.mark.parametrize(("values", "message"), GUARDS)
def test_template_guards_refuse_impossible_combinations(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    """A combination the schema cannot express fails the render with one readable line."""
    error = render_error(tmp_path, values)
    assert "execution error" in error
    assert message in error
    assert "s3cret" not in error and "X-Amz-Signature=ab" not in error  # never echo a secret


def test_native_sidecar_needs_kubernetes_1_29(tmp_path: Path) -> None:
    """On a 1.28 cluster the native sidecar is refused with the way out; classic renders."""
    error = render_error(tmp_path, {}, kube_version="1.28.0")
    assert "sidecar.native needs Kubernetes >= 1.29" in error
    assert "sidecar.native=false" in error


def test_library_values_are_required_under_their_key(tmp_path: Path) -> None:
    """A consumer that forgets the model gets the guard's message, not a nil-pointer error."""
    error = render_error(tmp_path, {"pointercache": {"model": ""}}, chart=CONSUMER)
    assert "pointercache.model is required" in error


def test_example_schema_file_is_used(tmp_path: Path) -> None:
    """The example chart's own schema refuses an unknown top-level key."""
    error = render_error(tmp_path, {"replicas": 3}, chart=EXAMPLE)
    assert "additional properties 'replicas' not allowed" in error
