"""KubeCluster, the real kubernetes client, over HTTP against the simulated API server (a
process of its own): what it sends (verbs, paths, content types, field manager, bodies), read
from the server's request log, and how each answer becomes an error kind."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.host.fleet import create_fleet
from simulators.kube_api.control import Control, ops, running_api
from tasks.cluster.kube import KubeCluster
from tasks.cluster.surface import ApplyConflict, EvictionBlocked, ExecResult
from workflows.errors import PermanentError, TransientError

CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "sriovdp-config", "namespace": "kube-system"},
              "data": {"config.json": "{}"}}
FORBIDDEN = ('{kind} "{name}" is forbidden: User "system:serviceaccount:nicflow:nicflow-controller" '
             'cannot {verb} resource "{resource}" in API group "" at the cluster scope')


class Api(Control):
    """The server's controls, and the requests it received since the test began."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.start = len(ops(root))

    @property
    def requests(self) -> list[dict[str, Any]]:
        return [op for op in ops(self.sim_root)[self.start:] if "method" in op]

    def writes(self) -> list[dict[str, Any]]:
        return [op for op in self.requests if op["write"]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two nodes without cards; Kube-OVN, the agent and the web pods as the seed makes them."""
    root = tmp_path_factory.mktemp("surface") / "fleet"
    create_fleet(root, 2, profiles={"node-000": "bare", "node-001": "bare"})
    with running_api(root):
        yield root


@pytest.fixture
def api(server: Path) -> Iterator[Api]:
    control = Api(server)
    control.seed()
    control.start = len(ops(server))
    yield control
    control.clear_faults()


@pytest.fixture
def kube(api: Api) -> KubeCluster:
    return KubeCluster.from_kubeconfig(str(api.kubeconfig), request_timeout=5)


def test_apply_is_a_server_side_apply_patch_with_field_manager_nicflow(api, kube):
    kube.apply(CONFIG_MAP)
    kube.apply(CONFIG_MAP, force=True)
    first, second = api.writes()
    assert first["method"] == "PATCH" and first["path"] == "/api/v1/namespaces/kube-system/configmaps/sriovdp-config"
    assert first["content_type"] == "application/apply-patch+yaml"
    assert first["query"] == {"fieldManager": "nicflow"}
    assert first["body"] == CONFIG_MAP
    assert second["query"] == {"fieldManager": "nicflow", "force": "true"}


def test_every_kind_goes_to_its_api_path(api, kube):
    manifests = [
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": "kube-multus-ds", "namespace": "kube-system"},
         "spec": {"selector": {"matchLabels": {"app": "multus"}}, "template": {
             "metadata": {"labels": {"app": "multus"}},
             "spec": {"containers": [{"name": "kube-multus", "image": "ghcr.io/k8snetworkplumbingwg/multus-cni"}]}}}},
        {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
         "metadata": {"name": "network-attachment-definitions.k8s.cni.cncf.io"}},
        {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
         "metadata": {"name": "default", "namespace": "default"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "multus"}},
    ]
    for manifest in manifests:
        kube.apply(manifest)
    assert [r["path"] for r in api.writes()] == [
        "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-multus-ds",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/network-attachment-definitions.k8s.cni.cncf.io",
        "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/default",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/multus",
    ]
    assert {r["content_type"] for r in api.writes()} == {"application/apply-patch+yaml"}
    nad = kube.get("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition", "default", "default")
    assert nad["metadata"]["name"] == "default"
    assert kube.get("apps/v1", "DaemonSet", "absent", "kube-system") is None


def test_an_apply_conflict_is_permanent_and_says_how_to_take_over(api, kube):
    # the ConfigMap as `kubectl apply` made it: its data is kubectl's (an Update by another manager)
    from kubernetes import client

    client.CoreV1Api(kube.api_client).create_namespaced_config_map(
        "kube-system", {**CONFIG_MAP, "data": {"config.json": '{"resourceList": []}'}},
        field_manager="kubectl-client-side-apply")
    with pytest.raises(ApplyConflict) as raised:
        kube.apply(CONFIG_MAP)
    assert isinstance(raised.value, PermanentError)
    message = raised.value.message
    assert "ConfigMap kube-system/sriovdp-config conflicts with fields another field manager owns" in message
    assert '"kubectl-client-side-apply" using v1: .data.config.json' in message
    assert "`force` parameter" in message
    assert api.writes()[-1]["query"] == {"fieldManager": "nicflow"}  # not forced


@pytest.mark.parametrize(("call", "method", "path", "verb", "resource"), [
    (lambda k: k.get("v1", "ConfigMap", "sriovdp-config", "kube-system"), "GET", "/configmaps/", "get", "configmaps"),
    (lambda k: k.list_pods(node="node-001"), "GET", "/api/v1/pods$", "list", "pods"),
    (lambda k: k.patch_node("node-001", unschedulable=True), "PATCH", "/nodes/node-001$", "patch", "nodes"),
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
    web = [p.name for p in kube.list_pods(namespace="default", selector={"app": "web"})]
    kube.evict("default", web[0])
    request = api.writes()[0]
    assert (request["method"], request["path"]) == ("POST", f"/api/v1/namespaces/default/pods/{web[0]}/eviction")
    assert request["content_type"] == "application/json"
    assert request["body"] == {"apiVersion": "policy/v1", "kind": "Eviction",
                               "metadata": {"name": web[0], "namespace": "default"}}
    # the seed's budget lets one web pod go at a time, and the one evicted came back at once: the
    # budget's own refusal is the server's; a fault makes the refusal certain here
    api.fail("POST", f"/{web[1]}/eviction$", 429, "Cannot evict pod as it would violate the pod's disruption budget.")
    with pytest.raises(EvictionBlocked) as raised:
        kube.evict("default", web[1])
    assert raised.value.pod == f"default/{web[1]}" and isinstance(raised.value, TransientError)
    assert "disruption budget" in raised.value.message
    kube.evict("default", "gone")  # 404: already evicted, not an error


def test_node_patches_are_strategic_merges_of_exactly_the_fields_given(api, kube):
    kube.patch_node("node-001", annotations={"nicflow.io/last-error": "old"})
    start = len(api.writes())
    kube.patch_node("node-001", unschedulable=True, labels={"nicflow.io/state": "cordoned"},
                    annotations={"nicflow.io/run-id": "run-1", "nicflow.io/last-error": None})
    request = api.writes()[start]
    assert (request["method"], request["path"], request["content_type"]) == (
        "PATCH", "/api/v1/nodes/node-001", "application/strategic-merge-patch+json")
    assert request["query"] == {"fieldManager": "nicflow"}
    assert request["body"] == {"metadata": {"labels": {"nicflow.io/state": "cordoned"},
                                            "annotations": {"nicflow.io/run-id": "run-1",
                                                            "nicflow.io/last-error": None}},
                               "spec": {"unschedulable": True}}
    seen = kube.get_node("node-001")
    assert seen.unschedulable and seen.labels["nicflow.io/state"] == "cordoned"
    assert "nicflow.io/last-error" not in seen.annotations and seen.labels["kubernetes.io/hostname"] == "node-001"


def test_lists_use_label_and_field_selectors(api, kube):
    kube.patch_node("node-000", labels={"team": "net"})
    start = len(api.requests)
    assert [n.name for n in kube.list_nodes({"team": "net"})] == ["node-000"]
    found = kube.list_pods(namespace="kube-system", node="node-001", selector={"app": "ovs"})
    assert [p.node for p in found] == ["node-001"] and found[0].name.startswith("ovs-ovn-")
    nodes_request, pods_request = api.requests[start:]
    assert nodes_request["query"]["labelSelector"] == "team=net"
    assert pods_request["path"] == "/api/v1/namespaces/kube-system/pods"
    assert pods_request["query"]["fieldSelector"] == "spec.nodeName=node-001"
    assert pods_request["query"]["labelSelector"] == "app=ovs"


def test_lists_page_by_page_and_give_every_item_once(api, kube, monkeypatch):
    """Each page becomes views as it arrives; the pages together are the one-page answer."""
    whole_nodes, whole_pods = kube.list_nodes(), kube.list_pods()
    monkeypatch.setattr("tasks.cluster.kube.PAGE", 1)
    start = len(api.requests)
    assert kube.list_nodes() == whole_nodes and len(whole_nodes) == 2
    node_requests = api.requests[start:]
    assert [r["query"].get("limit") for r in node_requests] == ["1", "1"]
    assert "continue" not in node_requests[0]["query"] and node_requests[1]["query"]["continue"]
    assert kube.list_pods() == whole_pods and len(whole_pods) > 2
    assert len(api.requests) - start == 2 + len(whole_pods)


def test_names_are_checked_before_any_request(api, kube):
    for call in (lambda: kube.get_node("../etc"), lambda: kube.evict("default", "a b"),
                 lambda: kube.list_pods(node="node;rm"), lambda: kube.get("v1", "ConfigMap", "x", "Kube_System"),
                 lambda: kube.patch_node("node-001", labels={"bad key!": "x"})):
        with pytest.raises(PermanentError):
            call()
    assert api.requests == []


def test_exec_goes_through_its_seam(kube):
    calls = []

    def fake_exec(core, namespace, pod_name, container, argv, timeout):
        calls.append((namespace, pod_name, container, list(argv), timeout))
        return ExecResult(0, "flows\n", "")

    seamed = KubeCluster(kube.api_client, pod_exec=fake_exec)
    result = seamed.exec("kube-system", "ovs-ovn-a", "openvswitch", ["ovs-appctl", "dpctl/dump-flows"], timeout=7)
    assert result.stdout == "flows\n"
    assert calls == [("kube-system", "ovs-ovn-a", "openvswitch", ["ovs-appctl", "dpctl/dump-flows"], 7)]
