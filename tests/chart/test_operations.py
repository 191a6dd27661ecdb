"""Operating the example: scrape wiring, the PrometheusRule, the HTTPRoute and its rate limit."""

from __future__ import annotations

import yaml

from tests.chart.conftest import EXAMPLE, NAMESPACE, RELEASE, render
from tests.conftest import REPO

RULES = REPO / "deploy" / "prometheus" / "pointercache.rules.yaml"
FULLNAME = f"{RELEASE}-pointercache-example"


def test_service_exposes_the_sidecar_metrics_port() -> None:
    """The Service has a `metrics` port that reaches the sidecar's status server by number."""
    rendered = render(EXAMPLE)
    ports = {p["name"]: p for p in rendered.one("Service")["spec"]["ports"]}
    sidecar_ports = rendered.container("pointercache-sidecar")["ports"]
    assert ports["metrics"]["port"] == ports["metrics"]["targetPort"] == 8787
    assert sidecar_ports[0]["containerPort"] == 8787


def test_monitoring_is_off_by_default() -> None:
    """Without monitoring values: no scrape annotations, no PodMonitor, no PrometheusRule."""
    rendered = render(EXAMPLE)
    template = rendered.one("Deployment")["spec"]["template"]["metadata"]
    assert "annotations" not in template
    assert not rendered.of_kind("PodMonitor")
    assert not rendered.of_kind("PrometheusRule")


def test_scrape_annotations_name_the_sidecar_port() -> None:
    """monitoring.podAnnotations adds prometheus.io/scrape, /port and /path for the sidecar."""
    rendered = render(EXAMPLE, "operations.yaml")
    annotations = rendered.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8787",
        "prometheus.io/path": "/metrics",
    }


def test_pod_monitor_selects_the_pods_and_the_sidecar_port() -> None:
    """The PodMonitor's selector matches the pod labels and its port is the sidecar's port name."""
    rendered = render(EXAMPLE, "operations.yaml")
    monitor = rendered.one("PodMonitor")
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    port_names = [p["name"] for p in rendered.container("pointercache-sidecar")["ports"]]
    assert endpoint["port"] in port_names
    assert endpoint["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["metadata"]["namespace"] == NAMESPACE


def test_prometheus_rule_carries_the_rules_file_unchanged() -> None:
    """The PrometheusRule holds the groups of the rules file, alert templates unrendered."""
    rule = render(EXAMPLE, "operations.yaml").one("PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    assert "{{ $labels.pod }}" in str(rule["spec"])


def test_http_route_sends_traffic_to_the_service() -> None:
    """The HTTPRoute attaches to the given Gateway and routes to the Service's http port."""
    rendered = render(EXAMPLE, "operations.yaml")
    route = rendered.one("HTTPRoute")["spec"]
    assert route["parentRefs"] == [{"name": "public", "namespace": "gateways"}]
    assert route["hostnames"] == ["model.example.com"]
    (rule,) = route["rules"]
    service = rendered.one("Service")
    http = next(p for p in service["spec"]["ports"] if p["name"] == "http")
    assert rule["backendRefs"] == [{"name": service["metadata"]["name"], "port": http["port"]}]


def test_envoy_rate_limit_targets_the_route() -> None:
    """The BackendTrafficPolicy limits the chart's own HTTPRoute with the configured rate."""
    rendered = render(EXAMPLE, "operations.yaml")
    policy = rendered.one("BackendTrafficPolicy")["spec"]
    assert policy["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": FULLNAME}
    ]
    assert rendered.one("HTTPRoute")["metadata"]["name"] == FULLNAME
    assert policy["rateLimit"]["type"] == "Local"
    assert policy["rateLimit"]["local"]["rules"] == [{"limit": {"requests": 100, "unit": "Second"}}]


def test_ingress_uses_the_cluster_default_class_and_no_controller_annotations() -> None:
    """The Ingress names no IngressClass by default and carries only the annotations given."""
    ingress = render(EXAMPLE, "operations.yaml").one("Ingress")
    assert "ingressClassName" not in ingress["spec"]
    assert ingress["metadata"]["annotations"] == {"example.com/owner": "ml-platform"}


def test_every_namespaced_object_names_the_release_namespace() -> None:
    """Every object of the example chart carries metadata.namespace (for `kubectl apply`)."""
    for values_file in ("full.yaml", "operations.yaml"):
        for doc in render(EXAMPLE, values_file).docs:
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["kind"]
