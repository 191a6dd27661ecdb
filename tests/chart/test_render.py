"""The rendered pod: containers, mounts, probes, security, volumes and RBAC, per values file."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from pointercache.sync.settings import (
    INIT,
    SIDECAR,
    Settings,
    add_arguments,
    env_name,
    from_namespace,
)
from tests.chart.conftest import (
    CONSUMER,
    EXAMPLE,
    LIBRARY,
    NAMESPACE,
    VALUES,
    VALUES_FILES,
    containers_of,
    helm,
    render,
)

ROLE_ENV = {
    role: {env_name(f.name) for f in dataclasses.fields(Settings) if role in f.metadata["roles"]}
    for role in (INIT, SIDECAR)
}
PC_CONTAINERS = ("pointercache-init", "pointercache-sidecar")


def env_map(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The container's env entries by name (each name must appear once)."""
    names = [e["name"] for e in container.get("env", [])]
    assert len(names) == len(set(names)), f"duplicate env in {container['name']}: {names}"
    return {e["name"]: e for e in container.get("env", [])}


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The container's volume mounts by volume name."""
    return {m["name"]: m for m in container.get("volumeMounts", [])}


@pytest.mark.parametrize("values_file", [None, *VALUES_FILES])
def test_helm_lint_passes(values_file: str | None) -> None:
    """helm lint --strict accepts the example chart with every values file."""
    args = ["lint", "--strict", str(EXAMPLE)]
    if values_file:
        args += ["-f", str(VALUES / values_file)]
    proc = helm(*args)
    assert "0 chart(s) failed" in proc.stdout


def test_helm_lint_library_and_minimal_consumer() -> None:
    """helm lint accepts the library chart itself and the README's minimal consumer chart."""
    assert "0 chart(s) failed" in helm("lint", "--strict", str(LIBRARY)).stdout
    assert "0 chart(s) failed" in helm("lint", "--strict", str(CONSUMER)).stdout


def test_packaged_chart_bundles_the_library(tmp_path: Path) -> None:
    """helm package follows the vendored library link, and the package renders on its own."""
    helm("package", str(EXAMPLE), "-d", str(tmp_path))
    (package,) = tmp_path.glob("pointercache-example-*.tgz")
    out = helm("template", "demo", str(package)).stdout
    assert "name: pointercache-sidecar" in out


def test_native_sidecar_is_a_restartable_init_container_after_init() -> None:
    """By default the sidecar is an init container with restartPolicy Always and a startupProbe."""
    pod = render(EXAMPLE).pod
    assert [c["name"] for c in pod["initContainers"]] == list(PC_CONTAINERS)
    assert [c["name"] for c in pod["containers"]] == ["model"]
    sidecar = pod["initContainers"][1]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/startupz", "port": "pc-status"}
    assert "restartPolicy" not in pod["initContainers"][0]


def test_native_startup_probe_follows_values() -> None:
    """The native sidecar's startupProbe budget comes from sidecar.startupProbe."""
    probe = render(EXAMPLE, "native.yaml").container("pointercache-sidecar")["startupProbe"]
    assert (probe["periodSeconds"], probe["failureThreshold"]) == (2, 30)


def test_classic_sidecar_is_a_regular_container() -> None:
    """sidecar.native=false puts the sidecar among the containers, without a startupProbe."""
    pod = render(EXAMPLE, "classic.yaml", kube_version="1.28.0").pod
    assert [c["name"] for c in pod["initContainers"]] == ["pointercache-init"]
    assert [c["name"] for c in pod["containers"]] == ["pointercache-sidecar", "model"]
    sidecar = pod["containers"][0]
    assert "restartPolicy" not in sidecar
    assert "startupProbe" not in sidecar


@pytest.mark.parametrize("values_file", ["native.yaml", "classic.yaml"])
def test_sidecar_probes_and_port(values_file: str) -> None:
    """Readiness is /readyz, liveness /healthz, on the named port the sidecar listens on."""
    sidecar = render(EXAMPLE, values_file).container("pointercache-sidecar")
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "pc-status"}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "pc-status"}
    assert sidecar["ports"] == [{"name": "pc-status", "containerPort": 8787, "protocol": "TCP"}]
    assert env_map(sidecar)["POINTERCACHE_LISTEN"]["value"] == "0.0.0.0:8787"
    assert sidecar["args"] == ["sidecar"]


def test_readiness_means_loaded_without_a_startup_deadlock() -> None:
    """The example runs the sidecar with readyWhen=loaded and its server acknowledges loads on
    loopback; the native sidecar's startupProbe stays on /startupz, so the model container
    (which sends the acknowledgement) can start."""
    pod = render(EXAMPLE).pod
    sidecar = next(c for c in pod["initContainers"] if c["name"] == "pointercache-sidecar")
    assert env_map(sidecar)["POINTERCACHE_READY_WHEN"]["value"] == "loaded"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/startupz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    model = render(EXAMPLE).container("model")
    assert "--ack-url=http://127.0.0.1:8787" in model["args"]


def test_reload_hooks_become_sidecar_settings() -> None:
    """sidecar.reload renders --on-flip-url (space-separated), the probe and the timeout."""
    env = env_map(render(EXAMPLE, "full.yaml").container("pointercache-sidecar"))
    assert env["POINTERCACHE_ON_FLIP_URL"]["value"] == (
        "http://127.0.0.1:8080/v2/repository/models/{model}/load "
        "http://127.0.0.1:9090/-/reload?version={version}"
    )
    assert env["POINTERCACHE_LOADED_PROBE_URL"]["value"] == (
        "http://127.0.0.1:8080/v2/models/{model}/ready"
    )
    assert env["POINTERCACHE_ON_FLIP_TIMEOUT"]["value"] == "300"
    minimal = env_map(render(CONSUMER).container("pointercache-sidecar"))
    assert minimal["POINTERCACHE_READY_WHEN"]["value"] == "published"
    assert "POINTERCACHE_ON_FLIP_URL" not in minimal


def test_model_container_probes_gate_on_the_loaded_model() -> None:
    """The model container's startup/readiness probes hit /health/ready, liveness /health/live."""
    model = render(EXAMPLE).container("model")
    assert model["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert model["startupProbe"]["periodSeconds"] * model["startupProbe"]["failureThreshold"] >= 120
    assert model["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert model["livenessProbe"]["httpGet"]["path"] == "/health/live"


@pytest.mark.parametrize("chart", [EXAMPLE, CONSUMER], ids=["example", "minimal"])
def test_model_container_mounts_the_shared_volume_read_only(chart: Path) -> None:
    """The model container sees the shared volume read-only, and the writers see it read-write."""
    rendered = render(chart)
    model = mounts(rendered.container("model"))["pointercache"]
    assert model == {"name": "pointercache", "mountPath": "/pointercache", "readOnly": True}
    for name in PC_CONTAINERS:
        writer = mounts(rendered.container(name))["pointercache"]
        assert writer["mountPath"] == "/pointercache"
        assert not writer.get("readOnly", False)
    assert rendered.volume("pointercache") == {"name": "pointercache", "emptyDir": {}}


@pytest.mark.parametrize("values_file", [None, *VALUES_FILES])
def test_secure_defaults_on_every_pointercache_container(values_file: str | None) -> None:
    """Init and sidecar: UID 10001, read-only root, no escalation, no caps, seccomp, limits."""
    rendered = render(EXAMPLE, *([values_file] if values_file else []))
    for name in PC_CONTAINERS:
        c = rendered.container(name)
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == 10001
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert set(c["resources"]["requests"]) == {"cpu", "memory"}
        assert set(c["resources"]["limits"]) == {"cpu", "memory"}
        assert mounts(c)["pointercache-tmp"]["mountPath"] == "/tmp"  # the only scratch space
    pod = rendered.pod
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == 10001
    assert rendered.container("model")["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("values_file", [None, *VALUES_FILES])
def test_env_names_are_settings_of_the_role(values_file: str | None) -> None:
    """Every POINTERCACHE_* variable is a setting of the container's role, and nothing unread."""
    rendered = render(EXAMPLE, *([values_file] if values_file else []))
    for name, role in zip(PC_CONTAINERS, (INIT, SIDECAR), strict=True):
        env = env_map(rendered.container(name))
        ours = {k for k in env if k.startswith("POINTERCACHE_")}
        assert ours <= ROLE_ENV[role], f"{name}: not {role} settings: {ours - ROLE_ENV[role]}"
        assert {"POINTERCACHE_MODEL", "POINTERCACHE_ROOT"} <= ours
        for unread in ("POD_NAME", "POD_NAMESPACE", "NODE_NAME"):  # no code reads them
            assert unread not in env, name


@pytest.mark.parametrize("values_file", [None, *VALUES_FILES])
def test_rendered_env_parses_into_valid_settings(values_file: str | None) -> None:
    """The CLI's own parser accepts each container's environment: types, choices, cross-checks."""
    rendered = render(EXAMPLE, *([values_file] if values_file else []))
    for name, role in zip(PC_CONTAINERS, (INIT, SIDECAR), strict=True):
        env = {k: e["value"] for k, e in env_map(rendered.container(name)).items() if "value" in e}
        downward = {  # what the kubelet fills in from the Downward API
            k: "stand-in-" + e["valueFrom"]["fieldRef"]["fieldPath"].replace(".", "-")
            for k, e in env_map(rendered.container(name)).items()
            if "fieldRef" in e.get("valueFrom", {})
        }
        env |= downward
        parser = argparse.ArgumentParser()
        add_arguments(parser, role)
        settings = from_namespace(parser.parse_args([]), role, env)
        assert settings.model == env["POINTERCACHE_MODEL"]
        assert str(settings.root) == "/pointercache"


def test_settings_reach_the_containers_as_the_cli_reads_them() -> None:
    """Registries, selector, pinned version and numbers arrive in the CLI's env names and forms."""
    rendered = render(EXAMPLE, "mlflow-s3.yaml")
    init = env_map(rendered.container("pointercache-init"))
    assert init["POINTERCACHE_MODEL"]["value"] == "recommender"
    assert init["POINTERCACHE_SELECTOR"]["value"] == "alias:champion"
    assert init["POINTERCACHE_REGISTRY"]["value"] == (
        "mlflow+http://mlflow.mlops.svc:5000 s3://model-manifests/recommender.json"
    )
    assert init["POINTERCACHE_REGISTRY_TIMEOUT"]["value"] == "0.75"
    assert init["POINTERCACHE_MAX_ARTIFACT_BYTES"]["value"] == "68719476736"
    assert init["POINTERCACHE_PINNED_VERSION"]["value"] == "7"
    assert init["POINTERCACHE_PINNED_URI"]["value"] == "s3://models/recommender/7/"
    assert init["POINTERCACHE_ALLOW"]["value"] == "s3://models/recommender/"
    assert init["POINTERCACHE_DEADLINE"]["value"] == "120"
    assert init["AWS_ENDPOINT_URL"]["value"] == "http://minio.storage.svc:9000"
    assert init["AWS_REGION"]["value"] == "eu-west-1"


def test_credentials_come_from_existing_secrets_only() -> None:
    """S3 keys are secretKeyRefs and the registry token is a file projected from a Secret."""
    rendered = render(EXAMPLE, "mlflow-s3.yaml")
    for name in PC_CONTAINERS:
        c = rendered.container(name)
        env = env_map(c)
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "s3-credentials"
            assert "value" not in env[key]
        token_file = env["POINTERCACHE_REGISTRY_TOKEN_FILE"]["value"]
        mount = mounts(c)["pointercache-secrets"]
        assert mount["readOnly"] is True
        assert token_file == f"{mount['mountPath']}/registry-token"
    (source,) = rendered.volume("pointercache-secrets")["projected"]["sources"]
    assert source["secret"] == {
        "name": "mlflow-token",
        "items": [{"key": "token", "path": "registry-token"}],
    }


def test_node_cache_on_hostpath() -> None:
    """nodeCache.type=hostPath mounts the node directory into both roles as --lkg-dir."""
    rendered = render(EXAMPLE, "node-cache-hostpath.yaml")
    volume = rendered.volume("pointercache-node-cache")
    assert volume["hostPath"] == {
        "path": "/var/lib/pointercache-cache",
        "type": "DirectoryOrCreate",
    }
    for name in PC_CONTAINERS:
        c = rendered.container(name)
        assert mounts(c)["pointercache-node-cache"]["mountPath"] == "/var/lib/pointercache"
        env = env_map(c)
        assert env["POINTERCACHE_LKG_DIR"]["value"] == "/var/lib/pointercache"
        assert env["POINTERCACHE_CACHE_MAX_BYTES"]["value"] == "21474836480"
    assert "pointercache-node-cache" not in mounts(rendered.container("model"))


def test_prepare_gives_the_hostpath_to_the_image_user_with_chown_only() -> None:
    """nodeCache.prepare adds a first init container: root with CAP_CHOWN only, chown to 10001."""
    rendered = render(EXAMPLE, "node-cache-hostpath.yaml")
    first = rendered.pod["initContainers"][0]
    assert first["name"] == "pointercache-prepare-cache"
    assert first["command"] == ["chown", "10001:10001", "/var/lib/pointercache"]
    sc = first["securityContext"]
    assert sc["runAsUser"] == 0
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert [m["name"] for m in first["volumeMounts"]] == ["pointercache-node-cache"]
    assert "pointercache-prepare-cache" not in str(render(EXAMPLE).pod)  # off by default


def test_node_cache_on_existing_pvc() -> None:
    """nodeCache.type=pvc mounts the named claim at nodeCache.mountPath."""
    rendered = render(EXAMPLE, "node-cache-pvc.yaml")
    assert rendered.volume("pointercache-node-cache")["persistentVolumeClaim"] == {
        "claimName": "model-cache"
    }
    init = rendered.container("pointercache-init")
    assert env_map(init)["POINTERCACHE_LKG_DIR"]["value"] == "/cache"


def test_without_node_cache_there_is_no_node_volume() -> None:
    """With the defaults nothing outlives the pod: no hostPath, no PVC, no LKG dir."""
    rendered = render(EXAMPLE)
    names = {v["name"] for v in rendered.pod["volumes"]}
    assert names == {"pointercache", "pointercache-tmp", "demo-model", "model-tmp"}
    assert "POINTERCACHE_LKG_DIR" not in env_map(rendered.container("pointercache-init"))


def test_rbac_is_off_by_default() -> None:
    """The defaults render no ServiceAccount, Role or RoleBinding, and mount no API token."""
    for chart in (EXAMPLE, CONSUMER):
        rendered = render(chart)
        kinds = {d["kind"] for d in rendered.docs}
        assert not kinds & {"ServiceAccount", "Role", "RoleBinding", "ClusterRole"}
    pod = render(EXAMPLE).pod
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "default"


def test_rbac_when_enabled_is_least_privilege() -> None:
    """rbac.create grants only the switched-on features, by resource name where possible."""
    rendered = render(EXAMPLE, "full.yaml")
    sa = rendered.one("ServiceAccount")
    assert sa["metadata"]["name"] == "demo-pointercache"
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("role/pointercache")
    binding = rendered.one("RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "demo-pointercache", "namespace": NAMESPACE}
    ]
    rules = rendered.one("Role")["rules"]
    by_resource = {(r["resources"][0], tuple(r.get("resourceNames", ()))): r for r in rules}
    lkg = by_resource[("configmaps", ("demo-pointercache-lkg",))]
    assert lkg["verbs"] == ["get", "watch", "update", "patch"]
    sources = by_resource[("configmaps", ("model-manifest",))]
    assert sources["verbs"] == ["get", "list", "watch"]
    assert by_resource[("pods", ())]["verbs"] == ["get", "patch"]
    assert by_resource[("events", ())]["verbs"] == ["create", "patch"]
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "secrets" not in rule["resources"]
        assert not {"delete", "deletecollection", "create"} & set(rule["verbs"]) or (
            rule["resources"] == ["events"]
        ), rule
    pod = rendered.pod
    assert pod["serviceAccountName"] == "demo-pointercache"
    assert pod["automountServiceAccountToken"] is True
    assert not rendered.of_kind("ClusterRole")


def test_rbac_grants_configmap_create_only_when_the_chart_does_not_create_it(
    tmp_path: Path,
) -> None:
    """With clusterLKG.create=false the sidecar creates the ConfigMap, so the Role allows it."""
    with_chart_cm = render(EXAMPLE, "full.yaml").one("Role")["rules"]
    assert not any(
        "create" in r["verbs"] for r in with_chart_cm if r["resources"] == ["configmaps"]
    )
    extra = {"pointercache": {"clusterLKG": {"enabled": True, "create": False}}}
    rendered = render(EXAMPLE, "full.yaml", extra=extra, tmp_path=tmp_path)
    rules = rendered.one("Role")["rules"]
    creates = [r for r in rules if r["resources"] == ["configmaps"] and "create" in r["verbs"]]
    assert creates == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]
    assert not [d for d in rendered.of_kind("ConfigMap") if d["metadata"]["name"].endswith("-lkg")]


def test_cluster_lkg_is_an_optional_configmap_volume_for_init_only() -> None:
    """clusterLKG mounts the ConfigMap optional into init and names it to the sidecar's mirror."""
    rendered = render(EXAMPLE, "full.yaml")
    volume = rendered.volume("pointercache-lkg")
    assert volume["configMap"] == {"name": "demo-pointercache-lkg", "optional": True}
    init = rendered.container("pointercache-init")
    assert mounts(init)["pointercache-lkg"]["readOnly"] is True
    assert env_map(init)["POINTERCACHE_LKG_CLUSTER_DIR"]["value"] == "/etc/pointercache/lkg"
    sidecar = rendered.container("pointercache-sidecar")
    assert "pointercache-lkg" not in mounts(sidecar)
    expected = f"{NAMESPACE}/demo-pointercache-lkg"
    assert env_map(sidecar)["POINTERCACHE_LKG_CONFIGMAP"]["value"] == expected
    cm = next(d for d in rendered.of_kind("ConfigMap") if d["metadata"]["name"].endswith("-lkg"))
    assert "data" not in cm  # upgrades never overwrite what the sidecars wrote
    assert cm["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_signature_and_admin_token_files() -> None:
    """The expected signature reaches both roles; the admin token reaches the sidecar only."""
    rendered = render(EXAMPLE, "full.yaml")
    init, sidecar = (rendered.container(n) for n in PC_CONTAINERS)
    assert env_map(init)["POINTERCACHE_EXPECT_SIGNATURE"]["value"].endswith("/signature.json")
    assert env_map(init)["POINTERCACHE_SIGNATURE_MODE"]["value"] == "subset"
    assert "pointercache-admin" not in mounts(init)
    assert mounts(sidecar)["pointercache-admin"]["readOnly"] is True
    assert env_map(sidecar)["POINTERCACHE_ADMIN_TOKEN_FILE"]["value"] == (
        "/etc/pointercache/admin/token"
    )
    assert rendered.volume("pointercache-admin")["secret"]["secretName"] == "pointercache-admin"
    assert env_map(sidecar)["POINTERCACHE_PREFETCH_SELECTOR"]["value"] == "alias:candidate"


def test_service_pdb_hpa_and_ingress() -> None:
    """The example has a Service, a PDB, an HPA with explicit behaviour and an optional Ingress."""
    rendered = render(EXAMPLE, "full.yaml")
    service = rendered.one("Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert rendered.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    hpa = rendered.one("HorizontalPodAutoscaler")["spec"]
    assert hpa["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert "replicas" not in rendered.one("Deployment")["spec"]  # the HPA owns the count
    strategy = rendered.one("Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0
    assert rendered.one("Ingress")["spec"]["tls"][0]["secretName"] == "model-example-tls"


def test_fixed_replicas_without_autoscaling(tmp_path: Path) -> None:
    """With autoscaling off the Deployment carries replicaCount and no HPA is rendered."""
    extra = {"autoscaling": {"enabled": False}, "replicaCount": 3}
    rendered = render(EXAMPLE, extra=extra, tmp_path=tmp_path)
    assert rendered.one("Deployment")["spec"]["replicas"] == 3
    assert not rendered.of_kind("HorizontalPodAutoscaler")


def test_ingress_is_off_by_default() -> None:
    """Without ingress.enabled no Ingress is rendered."""
    assert not render(EXAMPLE).of_kind("Ingress")


def test_no_plain_secret_values_anywhere() -> None:
    """No env value in any rendered container looks like a credential or a presigned URL."""
    for values_file in [None, *VALUES_FILES]:
        rendered = render(EXAMPLE, *([values_file] if values_file else []))
        for c in containers_of(rendered.one("Deployment")):
            for e in c.get("env", []):
                value = str(e.get("value", ""))
                assert "@" not in value.split("://", 1)[-1].split("/", 1)[0], e
                assert "X-Amz-Signature" not in value, e
