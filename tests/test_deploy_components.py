"""deploy/components/: the optional components an overlay adds to the example, each built
(kubectl kustomize, or the fallback renderer) into objects that validate and hold what the
processes need: the Sentinel-based Redis (issue 16, item 3)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.test_deploy_manifests import DEPLOY, Obj, build, containers, find, validate, workloads
from workers.settings import Settings

NICFLOW_WORKLOADS = [("Deployment", "nicflow-controller"), ("Deployment", "nicflow-api"),
                     ("DaemonSet", "nicflow-agent")]


def with_component(tmp_path: Path, *components: str) -> list[Obj]:
    """The example overlay with `components` added, built."""
    copied = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copied)
    variant = copied / "overlays" / "-".join(components)
    variant.mkdir()
    (variant / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../example"], "components": [f"../../components/{c}" for c in components]}))
    return build(variant)


@pytest.fixture(scope="module")
def sentinel_objects(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    return with_component(tmp_path_factory.mktemp("sentinel"), "redis-sentinel")


def script(obj: Obj) -> str:
    return containers(obj)[0]["command"][-1]


def test_the_sentinel_component_builds_into_valid_objects(sentinel_objects: list[Obj]) -> None:
    for obj in sentinel_objects:
        validate(obj)
    assert not [o for o in sentinel_objects if o["kind"] == "Service" and o["metadata"]["name"] == "nicflow-redis"], \
        "no Service over every Redis pod: it would hand a client a replica"


def test_three_redis_pods_and_three_sentinels_with_a_quorum_of_two(sentinel_objects: list[Obj]) -> None:
    redis = find(sentinel_objects, "StatefulSet", "nicflow-redis")
    sentinels = find(sentinel_objects, "StatefulSet", "nicflow-redis-sentinel")
    assert redis["spec"]["replicas"] == 3 and sentinels["spec"]["replicas"] == 3
    monitor = re.search(r'echo "sentinel monitor (\S+) (\S+) 6379 (\d)"', script(sentinels))
    assert monitor and monitor[1] == "nicflow" and int(monitor[3]) == 2
    assert "replicaof $primary 6379" in script(redis) and "masterauth $REDIS_PASSWORD" in script(redis)
    assert "--requirepass" not in script(redis) + script(sentinels), "passwords stay off the command line"
    for name in ("nicflow-redis", "nicflow-redis-sentinel"):
        pdb = find(sentinel_objects, "PodDisruptionBudget", name)
        assert pdb["spec"]["maxUnavailable"] == 1


def test_every_nicflow_process_finds_the_primary_through_the_sentinels(sentinel_objects: list[Obj],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sentinels = find(sentinel_objects, "StatefulSet", "nicflow-redis-sentinel")
    service = find(sentinel_objects, "Service", sentinels["spec"]["serviceName"])
    pods = {f"{sentinels['metadata']['name']}-{i}.{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
            for i in range(sentinels["spec"]["replicas"])}
    for kind, name in NICFLOW_WORKLOADS:
        env = {e["name"]: e for e in containers(find(sentinel_objects, kind, name))[0]["env"]}
        assert "REDIS_URL" not in env and "REDIS_PASSWORD" not in env, name
        assert set(env["NICFLOW_REDIS_SENTINELS"]["value"].split(",")) == pods, name
        assert env["NICFLOW_REDIS_MASTER"]["value"] == "nicflow", name
        for secret in ("NICFLOW_REDIS_PASSWORD", "NICFLOW_REDIS_SENTINEL_PASSWORD"):
            assert env[secret]["valueFrom"] == {"secretKeyRef": {"name": "nicflow-redis", "key": "password"}}
        # and nicflow's own settings accept what the manifest gives
        for variable in ("REDIS_URL", "NICFLOW_REDIS_URL"):
            monkeypatch.delenv(variable, raising=False)
        monkeypatch.setenv("NICFLOW_REDIS_SENTINELS", env["NICFLOW_REDIS_SENTINELS"]["value"])
        monkeypatch.setenv("NICFLOW_REDIS_MASTER", env["NICFLOW_REDIS_MASTER"]["value"])
        assert len(Settings().redis_sentinels or ()) == 3


def test_the_sentinels_are_found_before_they_are_ready_and_spread_over_nodes(sentinel_objects: list[Obj]) -> None:
    service = find(sentinel_objects, "Service", "nicflow-redis-sentinel")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    sentinels = find(sentinel_objects, "StatefulSet", "nicflow-redis-sentinel")
    spread = sentinels["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert spread["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"] == \
        "kubernetes.io/hostname"
    assert all(c["securityContext"]["readOnlyRootFilesystem"] for o in workloads(sentinel_objects)
               if o["metadata"]["name"].startswith("nicflow-redis") for c in containers(o))
