"""The simulated Kubernetes API server, a real process, reached through the official client:
resourceVersions, server-side apply with field managers, strategic merge and merge patches,
the Eviction API with PodDisruptionBudgets, selectors, watch, exec, Events, faults, and the
request log every test and the demo count writes from."""

from __future__ import annotations

import re

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from simulators.host.fleet import open_host
from tasks.cluster.kube import KubeCluster
from tasks.cluster.surface import ApplyConflict, EvictionBlocked
from tests.sim_api import kube, sim_api, sim_fleet  # noqa: F401 - fixtures
from workflows.errors import PermanentError, TransientError

CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"},
              "data": {"a": "1"}}


def core(kube: KubeCluster) -> client.CoreV1Api:
    return client.CoreV1Api(kube.api_client)


def test_every_write_gets_a_new_resource_version_and_a_stale_update_is_409(kube):
    first = kube.apply(CONFIG_MAP)
    second = kube.apply({**CONFIG_MAP, "data": {"a": "2"}})
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    stale = {**CONFIG_MAP,
             "metadata": {**CONFIG_MAP["metadata"], "resourceVersion": first["metadata"]["resourceVersion"]}}
    with pytest.raises(ApiException) as refused:
        core(kube).replace_namespaced_config_map("x", "kube-system", stale)
    assert refused.value.status == 409 and "the object has been modified" in refused.value.body
    assert kube.get_config_map("kube-system", "x") == {"a": "2"}


def test_apply_conflicts_with_another_managers_fields_unless_forced(kube):
    change = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ovs-ovn", "namespace": "kube-system"},
              "spec": {"template": {"spec": {"containers": [
                  {"name": "openvswitch", "env": [{"name": "HW_OFFLOAD", "value": "true"}]}]}}}}
    with pytest.raises(ApplyConflict) as conflict:
        kube.apply(change)
    assert 'conflict with "kubectl-client-side-apply" using apps/v1: ' \
           '.spec.template.spec.containers[name="openvswitch"].env[name="HW_OFFLOAD"].value' in str(conflict.value)
    forced = kube.apply(change, force=True)
    env = forced["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "HW_OFFLOAD", "value": "true"} in env and len(env) > 1  # merged by name, the rest kept
    owners = {m["manager"]: m for m in forced["metadata"]["managedFields"]}
    assert set(owners) == {"kubectl-client-side-apply", "nicflow"} and owners["nicflow"]["operation"] == "Apply"
    assert forced["metadata"]["generation"] == 2


def test_an_apply_of_the_same_values_shares_the_fields_and_a_dropped_field_goes(kube):
    kube.apply({**CONFIG_MAP, "data": {"a": "1", "b": "2"}})
    assert kube.apply({**CONFIG_MAP, "data": {"a": "1"}})["data"] == {"a": "1"}


def test_strategic_merge_by_name_and_merge_patch_for_custom_resources(kube):
    patched = kube.patch("apps/v1", "DaemonSet", "ovs-ovn", "kube-system", {"spec": {"template": {"spec": {
        "containers": [{"name": "openvswitch", "env": [{"name": "HW_OFFLOAD", "value": "true"}]}]}}}})
    env = {e["name"]: e.get("value") for e in patched["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HW_OFFLOAD"] == "true" and env["TUNNEL_TYPE"] == "geneve"
    nad = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": "sriov", "namespace": "default"}, "spec": {"config": "{}"}}
    kube.apply(nad)
    assert kube.patch("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition", "sriov", "default",
                      {"spec": {"config": '{"type":"kube-ovn"}'}})["spec"]["config"] == '{"type":"kube-ovn"}'
    with pytest.raises(PermanentError, match="not found"):
        kube.patch("v1", "ConfigMap", "absent", "kube-system", {"data": {"a": "1"}})


def test_eviction_is_refused_with_429_while_a_budget_allows_no_disruption(kube):
    policy = client.PolicyV1Api(kube.api_client)
    policy.create_namespaced_pod_disruption_budget("default", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "strict"},
        "spec": {"minAvailable": "100%", "selector": {"matchLabels": {"app": "web"}}}})
    web = kube.list_pods(namespace="default", selector={"app": "web"})
    with pytest.raises(TransientError, match="more than one PodDisruptionBudget"):
        kube.evict("default", web[0].name)
    policy.delete_namespaced_pod_disruption_budget("web", "default")
    with pytest.raises(EvictionBlocked, match="Cannot evict pod as it would violate the pod's disruption budget"):
        kube.evict("default", web[0].name)
    policy.delete_namespaced_pod_disruption_budget("strict", "default")
    kube.evict("default", web[0].name)
    assert web[0].ref not in [p.ref for p in kube.list_pods(namespace="default")]
    kube.evict("default", web[0].name)  # already gone: evicted


MERGE_PATCH = "application/merge-patch+json"


def test_a_pod_with_a_finalizer_stays_deleting_until_its_last_finalizer_goes(kube):
    api = core(kube)
    api.create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "held", "labels": {"app": "held"}, "finalizers": ["example.com/hold"]},
        "spec": {"nodeName": "node-001", "containers": [{"name": "main", "image": "busybox:1.36"}]}})
    client.PolicyV1Api(kube.api_client).create_namespaced_pod_disruption_budget("default", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "held"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "held"}}}})
    with pytest.raises(EvictionBlocked):
        kube.evict("default", "held")
    kube.delete_pod("default", "held")
    deleting = api.read_namespaced_pod("held", "default")
    assert deleting.metadata.deletion_timestamp is not None and deleting.metadata.deletion_grace_period_seconds == 30
    assert deleting.metadata.finalizers == ["example.com/hold"] and deleting.status.phase == "Running"
    kube.delete_pod("default", "held")  # deleted again: nothing changes
    kube.evict("default", "held")  # a pod already being deleted is evicted without its budget
    assert api.read_namespaced_pod("held", "default").metadata.resource_version == deleting.metadata.resource_version
    api.patch_namespaced_pod("held", "default", {"metadata": {"deletionTimestamp": None, "labels": {"a": "b"}}},
                             _content_type=MERGE_PATCH)
    assert api.read_namespaced_pod("held", "default").metadata.deletion_timestamp is not None  # not the writer's
    api.patch_namespaced_pod("held", "default", {"metadata": {"finalizers": None}}, _content_type=MERGE_PATCH)
    assert "held" not in [p.name for p in kube.list_pods(namespace="default")]
    web = kube.list_pods(namespace="default", selector={"app": "web"})[0]
    with pytest.raises(ApiException) as immutable:  # no write marks a pod deleting: only a delete does
        api.patch_namespaced_pod(web.name, "default", {"metadata": {"deletionTimestamp": "2099-01-01T00:00:00Z"}},
                                 _content_type=MERGE_PATCH)
    assert immutable.value.status == 422 and "metadata.deletionTimestamp" in immutable.value.body


def test_lists_select_by_label_and_node_and_page(kube):
    on_node = kube.list_pods(node="node-001")
    assert on_node and {p.node for p in on_node} == {"node-001"}
    assert {p.name.rsplit("-", 1)[0] for p in kube.list_pods(selector={"app": "ovs"})} == {"ovs-ovn"}
    page = core(kube).list_pod_for_all_namespaces(limit=3)
    assert len(page.items) == 3 and page.metadata._continue
    rest = core(kube).list_pod_for_all_namespaces(_continue=page.metadata._continue)
    assert len(page.items) + len(rest.items) == len(kube.list_pods())
    with pytest.raises(ApiException, match=re.escape("field label not supported: spec.hostname")):
        core(kube).list_pod_for_all_namespaces(field_selector="spec.hostname=x")


def test_a_node_status_patch_is_seen_by_a_watch_from_the_lists_resource_version(kube):
    nodes = core(kube).list_node()
    since = nodes.metadata.resource_version
    core(kube).patch_node_status("node-002", {"status": {"conditions": [
        {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown"}]}})
    assert kube.get_node("node-002").ready is False
    events = list(watch.Watch().stream(core(kube).list_node, resource_version=since, timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("MODIFIED", "node-002")]


def test_a_watch_from_an_expired_resource_version_is_told_410(sim_fleet):
    from simulators.kube_api.control import running_api
    from tests.sim_api import kube_for

    with running_api(sim_fleet, extra=["--watch-window", "2"]) as api:
        kube = kube_for(api)
        since = core(kube).list_node().metadata.resource_version
        for n in range(3):
            kube.patch_node("node-003", labels={"a": str(n)})
        with pytest.raises(ApiException) as gone:
            list(watch.Watch().stream(core(kube).list_node, resource_version=since, timeout_seconds=1))
        assert gone.value.status == 410


def test_exec_over_the_clients_websocket_runs_the_nodes_ovs_tools(kube, sim_fleet):
    ovs = next(p for p in kube.list_pods(node="node-000", namespace="kube-system") if p.name.startswith("ovs-ovn"))
    argv = ["ovs-vsctl", "get", "Open_vSwitch", ".", "other_config:hw-offload"]
    done = kube.exec("kube-system", ovs.name, "openvswitch", argv, timeout=10)
    on_host = open_host(sim_fleet, "node-000").run(argv, timeout=10)
    assert (done.returncode, done.stdout, done.stderr) == (on_host.returncode, on_host.stdout, on_host.stderr)
    assert done.stdout.strip() in ('"true"', '"false"')
    failed = kube.exec("kube-system", ovs.name, "openvswitch", ["true"], timeout=10)
    assert failed.returncode == 126 and "not emulated" in failed.stderr
    with pytest.raises(PermanentError, match="container nope is not valid"):
        kube.exec("kube-system", ovs.name, "nope", ["true"], timeout=10)


def test_events_and_any_namespaced_kind_are_stored(kube):
    events = client.CoreV1Api(kube.api_client)
    events.create_namespaced_event("default", {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
                                               "involvedObject": {"kind": "Node", "name": "node-000"},
                                               "reason": "NicflowRollout", "message": "hi", "type": "Normal"})
    assert [e.reason for e in events.list_namespaced_event("default").items] == ["NicflowRollout"]
    leases = client.CoordinationV1Api(kube.api_client)
    leases.create_namespaced_lease("default", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                               "metadata": {"name": "l1"}, "spec": {"holderIdentity": "a"}})
    assert leases.read_namespaced_lease("l1", "default").spec.holder_identity == "a"


def test_the_request_log_counts_writes_and_faults_answer_what_they_are_told(kube, sim_api):
    before = len(sim_api.writes())
    kube.apply(CONFIG_MAP)
    kube.patch_node("node-000", labels={"x": "y"}, unschedulable=True)
    kube.list_nodes()
    new = sim_api.writes()[before:]
    assert [(w["op"], w["kind"], w["name"]) for w in new] == [("apply", "ConfigMap", "x"),
                                                               ("patch-node", "Node", "node-000")]
    assert new[1]["unschedulable"] is True and new[1]["labels"] == {"x": "y"} and new[0]["latency"] == 0
    sim_api.fail("PATCH", r"/nodes/node-001$", 500, times=1)
    with pytest.raises(TransientError, match="500"):
        kube.patch_node("node-001", unschedulable=True)
    kube.patch_node("node-001", unschedulable=True)  # once only
    sim_api.fail("GET", r"/api/v1/nodes$", 403, "nodes is forbidden")
    with pytest.raises(PermanentError, match="forbidden"):
        kube.list_nodes()
    sim_api.clear_faults()
    assert kube.list_nodes()


def test_a_daemonset_without_selector_or_template_is_invalid_and_nothing_is_stored(kube, sim_api):
    bare = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "bare", "namespace": "kube-system"}}
    with pytest.raises(PermanentError, match=r'422\): DaemonSet.apps "bare" is invalid: spec.selector: Required value'):
        kube.apply(bare)
    assert kube.get("apps/v1", "DaemonSet", "bare", "kube-system") is None


def test_a_write_a_fault_refused_is_logged_with_what_was_sent(kube, sim_api):
    sim_api.fail("POST", r"/events$", 403, "events is forbidden")
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
             "involvedObject": {"kind": "Node", "name": "node-000"}, "reason": "Refused", "type": "Normal"}
    with pytest.raises(ApiException) as refused:
        core(kube).create_namespaced_event("default", event, _headers={"Content-Type": "application/json"})
    assert refused.value.status == 403 and "events is forbidden" in refused.value.body
    (line,) = [w for w in sim_api.writes() if w.get("kind") == "Event"]
    assert (line["op"], line["fault"], line["content_type"], line["body"]["reason"]) == (
        "create", 403, "application/json", "Refused")
    assert core(kube).list_namespaced_event("default").items == []  # refused: nothing stored


def test_a_pod_status_patch_changes_only_its_status_and_outlives_the_controllers(kube):
    """The kubelet's status write (pods/status): the spec sent with it is ignored, as the status
    strategy's PrepareForUpdate keeps the live spec (kubernetes pkg/registry/core/pod/strategy.go)."""
    web = kube.list_pods(namespace="default", selector={"app": "web"})[0]
    waiting = {"containerStatuses": [{"name": "web", "ready": False, "restartCount": 3,
                                      "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
    elsewhere = next(n.name for n in kube.list_nodes() if n.name != web.node)
    core(kube).patch_namespaced_pod_status(web.name, "default", {"status": waiting, "spec": {"nodeName": elsewhere}},
                                           field_manager="kubelet", _preload_content=False)
    kube.patch_node(web.node or "", unschedulable=True)  # a cordon: the emulated controllers reconcile
    (after,) = [p for p in kube.list_pods(namespace="default") if p.name == web.name]
    assert (after.waiting, after.node, after.phase) == (("CrashLoopBackOff",), web.node, "Running")
