"""deploy/components/reconciler: the reconciler's Deployment, policy and RBAC.

The overlay with the component builds into valid objects (tests/test_deploy_manifests.py's
build and checks), its policy loads against its pipeline, and its account holds exactly what
the reconciler asks the API for: the requests are recorded by the simulated API server while
the reconciler lists and watches the nodes, resolves a drift check's nodes and reports a
drifted node twice (an Event, then its repeat), and each becomes the grant the API server would
check (tests/test_deploy_rbac.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis import Redis

from simulators.host.fleet import create_fleet
from simulators.kube_api.control import running_api
from tasks.cluster.kube import KubeCluster, WatchExpired
from tasks.cluster.nodes import resolve_nodes
from tests.helpers import inline_engine
from tests.test_deploy_manifests import DEPLOY, build, containers, documents, find, pod_specs, validate
from tests.test_deploy_rbac import Grant, Request, describe, expand, grants_of
from workers.drift import report_drift
from workers.reconcile_main import policy_pipeline
from workers.reconciler import Reconciler
from workers.verify_view import Difference, Verdict
from workflows.policy import parse_policy

COMPONENT = DEPLOY / "components" / "reconciler"


def with_reconciler(tmp_path: Path) -> Path:
    """A copy of deploy/ whose example overlay enables the component, as README: Reconciling says."""
    copied = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copied)
    overlay = copied / "overlays" / "example"
    spec = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    spec["components"] = [*(spec.get("components") or []), "../../components/reconciler"]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return overlay


def component_objects() -> list[dict[str, Any]]:
    return [o for name in ("rbac.yaml", "policy.yaml", "reconciler.yaml") for o in documents(COMPONENT / name)]


def test_the_overlay_with_the_reconciler_builds_into_valid_objects(tmp_path: Path) -> None:
    objects = build(with_reconciler(tmp_path))
    for obj in objects:
        validate(obj)
    deployment = find(objects, "Deployment", "nicflow-reconciler")
    assert deployment["spec"]["replicas"] == 2  # one active, one standby
    spec = pod_specs(deployment)[0]
    assert spec["serviceAccountName"] == "nicflow-reconciler"
    assert find(objects, "ServiceAccount", "nicflow-reconciler")
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = containers(deployment)
    assert container["image"] == "registry.example.com/platform/nicflow:0.1.0"  # the overlay's image
    assert container["args"][:3] == ["reconcile", "--policy", "/etc/nicflow/policy/policy.yaml"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["livenessProbe"] and container["readinessProbe"]
    # its metrics (nicflow_nodes_drifted) for the monitoring component's ServiceMonitor (tests/test_monitoring.py)
    service = find(objects, "Service", "nicflow-reconciler-metrics")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    env = {e["name"]: e for e in container["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "nicflow-redis", "key": "password"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    policy_map = next(v for v in spec["volumes"] if v["name"] == "policy")["configMap"]["name"]
    assert mounts["policy"] == "/etc/nicflow/policy" and find(objects, "ConfigMap", policy_map)


def test_the_shipped_policy_loads_against_its_pipeline() -> None:
    config = next(o for o in component_objects() if o["kind"] == "ConfigMap")
    policy = parse_policy(config["data"]["policy.yaml"], source="policy.yaml")
    pipeline = policy_pipeline(policy)
    assert pipeline.spec.name == "corigine-offload"
    assert policy.spec.selector == {"feature.node.kubernetes.io/pci-19ee.present": "true"}
    assert pipeline.spec.rollout.max_unavailable == 2 and pipeline.spec.rollout.canary == 1


def recorded_requests(tmp_path: Path, redis: Redis) -> list[Request]:
    """What a reconciler sends: a relist, a watch session, a drift check's node resolution, a drift
    report, and the same drift reported again (the Event's count, workers.drift)."""
    root = tmp_path / "fleet"
    create_fleet(root, 2)
    policy = parse_policy(yaml.safe_dump({"name": "rbac", "pipeline": "corigine-offload", "debounce": 0,
                                          "selector": {"feature.node.kubernetes.io/pci-19ee.present": "true"}}))
    with running_api(root) as api:
        kube = KubeCluster.from_kubeconfig(str(api.kubeconfig), request_timeout=10)
        start = len(api.ops())
        # only the cluster side runs, and the engine's reservations (which nodes a live run holds):
        # Redis and the lease of the reconciler itself are not reached by relist and watch
        reconciler = Reconciler(engine=inline_engine(redis), redis=None, policy=policy,  # type: ignore[arg-type]
                                pipeline=None, cluster=kube, fleet="real", lease=None)  # type: ignore[arg-type]
        reconciler.relist()
        reconciler._watch()
        assert sorted(reconciler.first_seen) == ["node-000", "node-001"]  # it saw them wanting a rollout
        assert resolve_nodes(kube, names=["node-000"]) == ["node-000"]
        drifted = Verdict("drifted", [Difference("create-vfs", "write", "sriov_numvfs", 0, 4)])
        for _ in range(2):
            assert report_drift(kube, redis, policy="rbac", drifted={"node-000": drifted}, repair=False,
                                chat=None) == ["node-000"]
        ops = [op for op in api.ops()[start:] if "method" in op]
    return [Request(op["method"], op["path"], op["query"], op.get("content_type") or "", None) for op in ops]


def test_the_reconciler_s_roles_grant_exactly_what_it_asks_for(tmp_path: Path, redis: Redis) -> None:
    requests = recorded_requests(tmp_path, redis)
    needed = set().union(*(grants_of(r) for r in requests))
    assert Grant("", "nodes", "watch") in needed and Grant("", "events", "create") in needed
    assert Grant("", "events", "patch") in needed  # the repeat
    objects = component_objects()
    cluster_role = next(o for o in objects if o["kind"] == "ClusterRole")
    role = next(o for o in objects if o["kind"] == "Role")
    granted = expand(cluster_role["rules"]) | expand(role["rules"])
    assert needed == granted, f"missing: {describe(needed - granted)}; extra: {describe(granted - needed)}"
    # events only where a Node's events are written
    assert {r.path.split("/")[4] for r in requests if "/events" in r.path} == {role["metadata"]["namespace"]}
    for binding in (o for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "nicflow-reconciler",
                                        "namespace": "nicflow"}]


def test_a_watch_from_an_expired_resource_version_is_told_410_and_the_reconciler_relists(tmp_path: Path,
                                                                                       redis: Redis) -> None:
    """The server keeps 2 node events (`--watch-window 2`); a watch from before them is 410 Gone."""
    root = tmp_path / "fleet"
    create_fleet(root, 2)
    policy = parse_policy(yaml.safe_dump({"name": "expiry", "pipeline": "corigine-offload", "debounce": 0,
                                          "selector": {"feature.node.kubernetes.io/pci-19ee.present": "true"}}))
    with running_api(root, extra=["--watch-window", "2"]) as api:
        kube = KubeCluster.from_kubeconfig(str(api.kubeconfig), request_timeout=10)
        reconciler = Reconciler(engine=inline_engine(redis), redis=None, policy=policy,  # type: ignore[arg-type]
                                pipeline=None, cluster=kube, fleet="real", lease=None)  # type: ignore[arg-type]
        reconciler.relist()
        stale = reconciler.version
        for i in range(3):  # three changes push the list's resourceVersion out of the window
            kube.label_node("node-000", {"nicflow.io/state": f"s{i}"}, field_manager="kubectl-label")
        with pytest.raises(WatchExpired, match="too old resource version"):
            list(kube.watch_nodes(stale, timeout=1))
        assert "node-000" in reconciler.first_seen  # unlabelled when it listed
        reconciler._watch()  # told 410: lists again, and sees node-000 labelled now
        assert int(reconciler.version) > int(stale)
        assert sorted(reconciler.first_seen) == ["node-001"]
        assert reconciler.nodes["node-000"].labels["nicflow.io/state"] == "s2"
        watched = [op for op in api.ops() if op.get("op") == "watch"]
        assert watched and watched[-1]["query"]["resourceVersion"] == stale
