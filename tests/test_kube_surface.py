"""KubeCluster, the real kubernetes client, over HTTP against the local API stand-in:
what it sends (verbs, paths, content types, field manager, bodies) and how each
answer becomes an error kind."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tasks.cluster.kube import KubeCluster
from tasks.cluster.surface import ApplyConflict, EvictionBlocked, ExecResult
from tests.kube_standin import KubeStandIn, node, pod, running
from workflows.errors import PermanentError, TransientError

CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "sriovdp-config", "namespace": "kube-system"},
              "data": {"config.json": "{}"}}
FORBIDDEN = ('{kind} "{name}" is forbidden: User "system:serviceaccount:nicflow:nicflow-controller" '
             'cannot {verb} resource "{resource}" in API group "" at the cluster scope')


@pytest.fixture
def api() -> Iterator[KubeStandIn]:
    with running() as standin:
        yield standin


@pytest.fixture
def kube(api: KubeStandIn) -> KubeCluster:
    return KubeCluster(api.api_client(), request_timeout=5)


def test_apply_is_a_server_side_apply_patch_with_field_manager_nicflow(api, kube):
    kube.apply(CONFIG_MAP)
    kube.apply(CONFIG_MAP, force=True)
    first, second = api.writes()
    assert first.method == "PATCH" and first.path == "/api/v1/namespaces/kube-system/configmaps/sriovdp-config"
    assert first.content_type == "application/apply-patch+yaml"
    assert first.query == {"fieldManager": "nicflow"}
    assert first.body == CONFIG_MAP
    assert second.query == {"fieldManager": "nicflow", "force": "true"}


def test_every_kind_goes_to_its_api_path(api, kube):
    manifests = [
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": "kube-multus-ds", "namespace": "kube-system"}},
        {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
         "metadata": {"name": "network-attachment-definitions.k8s.cni.cncf.io"}},
        {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
         "metadata": {"name": "default", "namespace": "default"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "multus"}},
    ]
    for manifest in manifests:
        kube.apply(manifest)
    assert [r.path for r in api.writes()] == [
        "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-multus-ds",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/network-attachment-definitions.k8s.cni.cncf.io",
        "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/default",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/multus",
    ]
    assert {r.content_type for r in api.writes()} == {"application/apply-patch+yaml"}
    nad = kube.get("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition", "default", "default")
    assert nad["metadata"]["name"] == "default"
    assert kube.get("apps/v1", "DaemonSet", "absent", "kube-system") is None


def test_an_apply_conflict_is_permanent_and_says_how_to_take_over(api, kube):
    api.fail("PATCH", "/configmaps/sriovdp-config$", 409, 'Apply failed with 1 conflict: conflict with '
             '"kubectl-client-side-apply" using v1: .data.config.json')
    with pytest.raises(ApplyConflict) as raised:
        kube.apply(CONFIG_MAP)
    assert isinstance(raised.value, PermanentError)
    message = raised.value.message
    assert "ConfigMap kube-system/sriovdp-config conflicts with fields another field manager owns" in message
    assert '"kubectl-client-side-apply" using v1: .data.config.json' in message
    assert "`force` parameter" in message
    assert api.writes()[0].query == {"fieldManager": "nicflow"}  # not forced


@pytest.mark.parametrize(("call", "method", "path", "verb", "resource"), [
    (lambda k: k.get("v1", "ConfigMap", "sriovdp-config", "kube-system"), "GET", "/configmaps/", "get", "configmaps"),
    (lambda k: k.list_pods(node="node-1"), "GET", "/api/v1/pods$", "list", "pods"),
    (lambda k: k.patch_node("node-1", unschedulable=True), "PATCH", "/nodes/node-1$", "patch", "nodes"),
    (lambda k: k.evict("default", "web-1"), "POST", "/eviction$", "create", "pods/eviction"),
    (lambda k: k.apply(CONFIG_MAP), "PATCH", "/configmaps/", "patch", "configmaps"),
    (lambda k: k.delete_pod("kube-system", "sriovdp-x"), "DELETE", "/pods/", "delete", "pods"),
])
def test_forbidden_is_permanent_and_names_the_verb_and_resource(api, kube, call, method, path, verb, resource):
    api.fail(method, path, 403, FORBIDDEN.format(kind=resource, name="x", verb=verb, resource=resource))
    with pytest.raises(PermanentError) as raised:
        call(kube)
    message = raised.value.message
    assert message.startswith(f"forbidden: the service account lacks permission to {verb} {resource} ")
    assert f"grant `{verb}` on `{resource}`" in message
    assert f'cannot {verb} resource "{resource}"' in message  # the API server's own words follow


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_transient(api, kube, status):
    api.fail("GET", "/api/v1/nodes", status, "etcdserver: request timed out")
    with pytest.raises(TransientError) as raised:
        kube.list_nodes()
    assert not isinstance(raised.value, PermanentError)
    assert f"answered {status}: etcdserver: request timed out" in raised.value.message


def test_connection_errors_are_transient():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    from kubernetes import client

    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.retries = 0
    with pytest.raises(TransientError) as raised:
        KubeCluster(client.ApiClient(configuration), request_timeout=2).get_node("node-1")
    assert "cannot reach the Kubernetes API to get nodes node-1" in raised.value.message


def test_eviction_body_and_a_pdb_refusal(api, kube):
    api.put(pod("default", "web-1", "node-1"))
    api.put(pod("default", "web-2", "node-1"))
    kube.evict("default", "web-1")
    request = api.writes()[0]
    assert (request.method, request.path) == ("POST", "/api/v1/namespaces/default/pods/web-1/eviction")
    assert request.content_type == "application/json"
    assert request.body == {"apiVersion": "policy/v1", "kind": "Eviction",
                            "metadata": {"name": "web-1", "namespace": "default"}}
    api.fail("POST", "/web-2/eviction$", 429, "Cannot evict pod as it would violate the pod's disruption budget.")
    with pytest.raises(EvictionBlocked) as raised:
        kube.evict("default", "web-2")
    assert raised.value.pod == "default/web-2" and isinstance(raised.value, TransientError)
    assert "disruption budget" in raised.value.message
    kube.evict("default", "gone")  # 404: already evicted, not an error


def test_node_patches_are_strategic_merges_of_exactly_the_fields_given(api, kube):
    api.put(node("node-1"))
    kube.patch_node("node-1", unschedulable=True, labels={"nicflow.io/state": "cordoned"},
                    annotations={"nicflow.io/run-id": "run-1", "nicflow.io/last-error": None})
    request = api.writes()[0]
    assert (request.method, request.path, request.content_type) == (
        "PATCH", "/api/v1/nodes/node-1", "application/strategic-merge-patch+json")
    assert request.query == {"fieldManager": "nicflow"}
    assert request.body == {"metadata": {"labels": {"nicflow.io/state": "cordoned"},
                                         "annotations": {"nicflow.io/run-id": "run-1", "nicflow.io/last-error": None}},
                            "spec": {"unschedulable": True}}
    seen = kube.get_node("node-1")
    assert seen.unschedulable and seen.labels["nicflow.io/state"] == "cordoned"
    assert "nicflow.io/last-error" not in seen.annotations


def test_lists_use_label_and_field_selectors(api, kube):
    api.put(node("node-1", labels={"feature.node.kubernetes.io/pci-19ee.present": "true"}))
    api.put(node("node-2"))
    api.put(pod("kube-system", "ovs-ovn-a", "node-1", owner="DaemonSet", labels={"app": "ovs"}))
    api.put(pod("kube-system", "ovs-ovn-b", "node-2", owner="DaemonSet", labels={"app": "ovs"}))
    assert [n.name for n in kube.list_nodes({"feature.node.kubernetes.io/pci-19ee.present": "true"})] == ["node-1"]
    found = kube.list_pods(namespace="kube-system", node="node-2", selector={"app": "ovs"})
    assert [p.name for p in found] == ["ovs-ovn-b"]
    nodes_request, pods_request = api.requests
    assert nodes_request.query["labelSelector"] == "feature.node.kubernetes.io/pci-19ee.present=true"
    assert pods_request.path == "/api/v1/namespaces/kube-system/pods"
    assert pods_request.query["fieldSelector"] == "spec.nodeName=node-2"
    assert pods_request.query["labelSelector"] == "app=ovs"


def test_names_are_checked_before_any_request(api, kube):
    for call in (lambda: kube.get_node("../etc"), lambda: kube.evict("default", "a b"),
                 lambda: kube.list_pods(node="node;rm"), lambda: kube.get("v1", "ConfigMap", "x", "Kube_System"),
                 lambda: kube.patch_node("node-1", labels={"bad key!": "x"})):
        with pytest.raises(PermanentError):
            call()
    assert api.requests == []


def test_exec_goes_through_its_seam():
    calls = []

    def fake_exec(core, namespace, pod_name, container, argv, timeout):
        calls.append((namespace, pod_name, container, list(argv), timeout))
        return ExecResult(0, "flows\n", "")

    with running() as api:
        kube = KubeCluster(api.api_client(), pod_exec=fake_exec)
        result = kube.exec("kube-system", "ovs-ovn-a", "openvswitch", ["ovs-appctl", "dpctl/dump-flows"], timeout=7)
    assert result.stdout == "flows\n"
    assert calls == [("kube-system", "ovs-ovn-a", "openvswitch", ["ovs-appctl", "dpctl/dump-flows"], 7)]
