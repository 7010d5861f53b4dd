"""The controller's ClusterRole holds exactly what the cluster surface asks the API for.

The permissions are derived from a recorded run, not written down twice: every
step that acts on the cluster (cluster steps, node lifecycle steps on the
controller, the node state reporter) runs on the real `kubernetes` client
against the simulated API server (simulators/kube_api), over a fresh cluster and
then over the converged one; each request in its log becomes the (API group, resource,
verb, name) the API server authorizes. The ClusterRole in deploy/base must grant
each of them and nothing else. Two guards keep the recording complete: every
step type that runs against the cluster must be exercised here, and every typed
client method tasks/cluster/kube.py calls must be one this file knows.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from simulators.host.fleet import create_fleet
from simulators.kube_api.control import ops, running_api
from tasks.cluster import kube as kube_module
from tasks.cluster.kube import KINDS, KubeCluster
from tasks.cluster.reporter import NodeStateReporter
from tasks.cluster.surface import NodeEvent
from tasks.registry import default_registry
from tests.kube_support import run

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "deploy" / "base"
RUN = "20990101-000000-abcdef"
NAMESPACE = "nicflow"

NAMED = {"clusterroles", "clusterrolebindings", "customresourcedefinitions"}
"""Cluster-scoped objects nicflow creates are granted by name (resourceNames): nicflow may
touch Multus's ClusterRole, not every ClusterRole."""

APPLY = "application/apply-patch+yaml"
FAST_DRAIN = {"drain_timeout": 5.0, "eviction_backoff": 0.01, "eviction_backoff_max": 0.02, "poll_interval": 0.01}


class Grant(NamedTuple):
    group: str
    resource: str
    """resource[/subresource], as RBAC rules spell it."""
    verb: str
    name: str = ""
    """A resourceNames entry, or "" for the whole resource."""

    def __str__(self) -> str:
        named = f" {self.name}" if self.name else ""
        return f"{self.verb} {self.group or 'core'}/{self.resource}{named}"


# --- requests -> grants -----------------------------------------------------------------------

CONNECT = {"exec", "attach", "portforward"}
PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/(?:namespaces/(?P<ns>[^/]+)/)?"
                  r"(?P<resource>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$")


def grants_of(request: Request) -> set[Grant]:
    """What the API server authorizes for one request (k8s.io/apiserver RequestInfo)."""
    match = PATH.match(request.path)
    assert match, f"unexpected API path {request.path}"
    group, name, sub = match["group"] or "", match["name"] or "", match["sub"]
    resource = match["resource"] + (f"/{sub}" if sub else "")
    if request.method == "GET" and sub in CONNECT:
        # the websocket upgrade is a GET: `get`, and since Kubernetes 1.35 also `create`
        # (AuthorizePodWebsocketUpgradeCreatePermission, on by default)
        verbs = ["get", "create"]
    elif request.method == "GET":
        verbs = ["get"] if name else ["watch" if request.query.get("watch") in ("1", "true") else "list"]
    elif request.method == "PATCH":
        # server-side apply creates a missing object: the API server then checks `create` too
        verbs = ["patch", "create"] if request.content_type == APPLY else ["patch"]
    else:
        verbs = [{"POST": "create", "PUT": "update",
                  "DELETE": "delete" if name else "deletecollection"}[request.method]]
    kept = name if match["resource"] in NAMED else ""
    return {Grant(group, resource, verb, kept) for verb in verbs}


class Request(NamedTuple):
    """One API request, as the simulated API's log has it."""

    method: str
    path: str
    query: dict[str, Any]
    content_type: str
    body: Any


def requests_of(root: Path, since: int = 0) -> list[Request]:
    return [Request(op["method"], op["path"], op.get("query") or {}, op.get("content_type", ""), op.get("body"))
            for op in ops(root)[since:] if "method" in op]


# --- the recorded run ---------------------------------------------------------------------------

VFS = ["0000:04:08.0", "0000:04:08.1", "0000:04:08.2", "0000:04:08.3"]
CONVERGED = {"numvfs": 4, "vf_pci_addresses": VFS, "vf_representors": [f"pf0vf{i}" for i in range(4)],
             "eswitch_mode": "switchdev", "network": "default/default"}
"""What the node steps report of a converged agilio-cx host (simulators/host/profiles.py)."""


SCENARIO: list[tuple[str, dict[str, Any], str | None, dict[str, Any]]] = [
    # (step type, parameters, node, facts), in the order of a rollout
    ("ensure-configmap", {"namespace": "kube-system", "name": "nicflow-hello", "data": {"message": "hello"}}, None, {}),
    ("sriov-device-plugin", {}, None, {}),
    ("multus", {}, None, {}),
    ("network-attachment", {}, None, {}),
    ("kube-ovn", {"iface": "ens1f0np0", "allow_disable_lb": True}, None, {}),
    ("ovs-ovn-check", {}, "node-000", {}),
    ("cordon-drain", {**FAST_DRAIN, "when_any": ["firmware_changed"]}, "node-000", {"firmware_changed": True}),
    ("restart-device-plugin", {}, "node-000", {"numvfs": 4}),
    ("restart-ovs-ovn", {"poll_interval": 0.01}, "node-000", {"drained": True}),
    ("restart-ovs-ovn", {"poll_interval": 0.01}, "node-001", {"drained": True}),
    ("verify-offload-cluster", {"traffic_probe": True}, "node-000", CONVERGED),
    ("uncordon", {}, "node-000", {}),
    ("restore-ovs-ovn-strategy", {}, None, {}),
    ("restore-device-plugin-config", {}, None, {}),  # corigine-rollback's
]


def cluster_step_types() -> set[str]:
    """Every registered step type that acts on the cluster surface."""
    registry = default_registry()
    return {name for name in registry.names()
            if registry.get(name).scope == "cluster" or registry.get(name).runs_on == "cluster"}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Request]]:
    """The requests of a rollout over a fresh cluster (two converged hosts, Kube-OVN as its install.sh
    of v1.12.35 leaves it, web pods under a budget, nicflow's agent), then of a second one over the
    converged cluster; exec goes over the client's websocket."""
    root = tmp_path_factory.mktemp("rbac") / "fleet"
    create_fleet(root, 2, profiles={"node-000": "agilio-cx-converged", "node-001": "agilio-cx-converged"})
    with running_api(root) as api:
        kube = KubeCluster.from_kubeconfig(str(api.kubeconfig), request_timeout=10)
        reporter = NodeStateReporter(lambda fleet: kube)
        for repeat in range(2):
            for step_type, params, node_name, facts in SCENARIO:
                result = run(step_type, kube, params, node=node_name, facts=facts, run_id=RUN)
                assert result.status in ("ok", "changed"), (step_type, result)
            for state in ("running", "failed", "succeeded"):
                reporter.node_state("real", RUN, "node-001", state, "create-vfs: failed" if state == "failed" else None)
            # the node's Events (workers.node_events): the first run creates one, the second repeats it
            kube.record_event(NodeEvent(node="node-000", reason="Cordoned", message="cordoned", count=repeat + 1))
        yield requests_of(root)


def derived(requests: Iterable[Request]) -> set[Grant]:
    return set().union(*(grants_of(r) for r in requests))


# --- the manifests ------------------------------------------------------------------------------

def base_objects() -> list[dict[str, Any]]:
    found = []
    for path in sorted(BASE.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return found


def cluster_role(name: str) -> dict[str, Any]:
    matches = [o for o in base_objects() if o["kind"] == "ClusterRole" and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"ClusterRole {name} not found once in deploy/base"
    return matches[0]


def expand(rules: list[dict[str, Any]]) -> set[Grant]:
    return {Grant(group, resource, verb, name)
            for rule in rules
            for group, resource, verb, name in itertools.product(
                rule.get("apiGroups", []), rule.get("resources", []), rule.get("verbs", []),
                rule.get("resourceNames") or [""])}


def bound_roles(account: str) -> set[str]:
    """ClusterRoles and Roles bound to the ServiceAccount `account` of the nicflow namespace."""
    roles = set()
    for obj in base_objects():
        if obj["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            for subject in obj.get("subjects") or []:
                subject_key = (subject["kind"], subject["name"], subject.get("namespace"))
                if subject_key == ("ServiceAccount", account, NAMESPACE):
                    roles.add(obj["roleRef"]["name"])
    return roles


def describe(grants: Iterable[Grant]) -> str:
    return ", ".join(sorted(map(str, grants))) or "none"


# --- tests --------------------------------------------------------------------------------------

def test_every_step_that_acts_on_the_cluster_is_in_the_recorded_rollout():
    exercised = {step_type for step_type, *_ in SCENARIO}
    missing = cluster_step_types() - exercised
    assert not missing, f"cluster step types not exercised by the RBAC scenario (add them to SCENARIO): {missing}"


def test_the_controller_cluster_role_grants_exactly_what_the_recording_asks_for(recorded):
    needed = derived(recorded)
    granted = expand(cluster_role("nicflow-controller")["rules"])
    assert not any("*" in g for g in granted), "no wildcard in the controller's ClusterRole"
    assert needed - granted == set(), f"the ClusterRole lacks: {describe(needed - granted)}"
    assert granted - needed == set(), f"the ClusterRole grants what no step uses: {describe(granted - needed)}"


def test_the_recording_covers_reads_writes_evictions_exec_and_deletes(recorded):
    needed = derived(recorded)
    for grant in [Grant("", "nodes", "patch"), Grant("", "pods/eviction", "create"), Grant("", "pods/exec", "create"),
                  Grant("", "pods", "delete"), Grant("apps", "daemonsets", "create"),
                  Grant("", "events", "create"), Grant("", "events", "patch"),
                  Grant("rbac.authorization.k8s.io", "clusterroles", "create", "multus"),
                  Grant("k8s.cni.cncf.io", "network-attachment-definitions", "patch")]:
        assert grant in needed, grant


def test_the_delegate_role_holds_exactly_the_rules_nicflow_hands_to_the_roles_it_applies(recorded):
    """RBAC escalation prevention: creating a ClusterRole, or binding one, needs its rules held."""
    applied = [r.body for r in recorded
               if r.method == "PATCH" and "/clusterroles/" in r.path and r.content_type == APPLY]
    assert applied, "the recording applied no ClusterRole"
    handed = expand([rule for role in applied for rule in role["rules"]])
    delegate = expand(cluster_role("nicflow-controller-delegate")["rules"])
    assert delegate == handed, (f"missing: {describe(handed - delegate)}; "
                                f"extra: {describe(delegate - handed)}")


def test_the_controller_account_is_bound_to_its_roles_only():
    assert bound_roles("nicflow-controller") == {"nicflow-controller", "nicflow-controller-delegate"}
    controller = next(o for o in base_objects()
                      if o["kind"] == "Deployment" and o["metadata"]["name"] == "nicflow-controller")
    assert controller["spec"]["template"]["spec"]["serviceAccountName"] == "nicflow-controller"


def test_the_api_role_is_what_resolving_a_run_s_nodes_asks_for(monkeypatch, tmp_path):
    """A run on a real fleet started from the api resolves its nodes and their labels through the API."""
    import workers.runtime
    from workers.api.operations import target_labels
    from workers.targets import resolve_targets

    root = tmp_path / "fleet"
    create_fleet(root, 2, profiles={"node-000": "agilio-cx", "node-001": "bare"})  # the NFD label on node-000
    with running_api(root) as api:
        kube = KubeCluster.from_kubeconfig(str(api.kubeconfig), request_timeout=5)
        monkeypatch.setattr(workers.runtime, "real_cluster", lambda: kube)
        sim_root = Path("/nonexistent")
        since = len(ops(root))
        assert resolve_targets(fleet=None, sim_root=sim_root, nodes="node-000,node-001", selector=None) == (
            "real", ["node-000", "node-001"])
        assert resolve_targets(fleet=None, sim_root=sim_root, nodes=None,
                               selector="feature.node.kubernetes.io/pci-19ee.present=true") == ("real", ["node-000"])
        assert target_labels("real", ["node-000"])
        needed = derived(requests_of(root, since))
    assert needed == expand(cluster_role("nicflow-api")["rules"])
    assert bound_roles("nicflow-api") == {"nicflow-api"}


def test_the_agent_holds_no_cluster_permission_and_no_token():
    assert bound_roles("nicflow-agent") == set()
    account = next(o for o in base_objects()
                   if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "nicflow-agent")
    assert account.get("automountServiceAccountToken") is False
    agent = next(o for o in base_objects() if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "nicflow-agent")
    spec = agent["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "nicflow-agent"
    assert spec.get("automountServiceAccountToken") is False


# --- the static guard: kube.py calls nothing this file does not know ---------------------------------

KNOWN_METHODS: dict[str, set[Grant]] = {
    "list_node": {Grant("", "nodes", "list")},
    "read_node": {Grant("", "nodes", "get")},
    "patch_node": {Grant("", "nodes", "patch")},
    "list_pod_for_all_namespaces": {Grant("", "pods", "list")},
    "list_namespaced_pod": {Grant("", "pods", "list")},
    "list_namespaced_daemon_set": {Grant("apps", "daemonsets", "list")},
    "delete_namespaced_pod": {Grant("", "pods", "delete")},
    "create_namespaced_pod_eviction": {Grant("", "pods/eviction", "create")},
    "connect_get_namespaced_pod_exec": {Grant("", "pods/exec", "get"), Grant("", "pods/exec", "create")},
    "create_namespaced_event": {Grant("", "events", "create")},
    "patch_namespaced_event": {Grant("", "events", "patch")},
    # the reconciler's (deploy/components/reconciler, tests/test_deploy_reconciler.py) and `sim add-node`'s
    "create_node": {Grant("", "nodes", "create")},
}
"""Typed client methods kube.py names literally, and what the API server authorizes for each."""


def typed_api_methods() -> set[str]:
    from kubernetes import client

    apis = [client.CoreV1Api, client.AppsV1Api, client.ApiextensionsV1Api, client.RbacAuthorizationV1Api,
            client.CustomObjectsApi, client.PolicyV1Api]
    verbs = re.compile(r"^(list|read|get|create|patch|replace|delete|connect)_")
    return {name for api in apis for name in dir(api) if verbs.match(name)}


def test_kube_py_calls_only_api_methods_this_file_maps():
    tree = ast.parse(Path(kube_module.__file__).read_text())
    methods = typed_api_methods()
    called = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in methods}
    unknown = called - set(KNOWN_METHODS)
    assert not unknown, (f"tasks/cluster/kube.py calls {sorted(unknown)}: add them to KNOWN_METHODS, "
                         "exercise them in SCENARIO, and grant them in deploy/base/rbac.yaml")


def static_capabilities() -> set[Grant]:
    """Everything kube.py can ask for: its literal methods, and read/patch (apply) of each kind in KINDS."""
    grants = set().union(*KNOWN_METHODS.values())
    for kind in KINDS.values():
        grants |= {Grant(kind.group, kind.resource, verb) for verb in ("get", "patch", "create")}
    return grants


def test_every_recorded_request_is_one_kube_py_can_make(recorded):
    unnamed = {g._replace(name="") for g in derived(recorded)}
    assert unnamed <= static_capabilities(), describe(unnamed - static_capabilities())
