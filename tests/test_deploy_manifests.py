"""deploy/: every manifest, and the kustomize build of the example overlay, is valid
Kubernetes for a pinned version, and holds what the processes need.

The build is `kubectl kustomize` where kubectl is installed; elsewhere the small
renderer below, which does what these kustomizations use (resources, components,
strategic-merge patches with `$patch` and null deletions, images) and refuses
anything else. Where kubectl is present the two are compared, so the renderer
stays honest.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tasks.cluster.surface import AGENT_LABELS
from tests.crd_schema import is_crd_kind, validate_crd_object

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
OVERLAY = DEPLOY / "overlays" / "example"
EXTERNAL_REDIS = DEPLOY / "components" / "external-redis"
K8S_VERSION = "1.33.0"
"""The Kubernetes version whose schemas every object must satisfy (strict: no unknown field)."""
NFD_LABEL = "feature.node.kubernetes.io/pci-19ee.present"
NON_ROOT_UID = 10001
"""The image's USER (Dockerfile); the api and controller pods say the same."""

Obj = dict[str, Any]


# --- a minimal kustomize ------------------------------------------------------------------------

MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "envFrom": None, "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name"}
"""Strategic-merge list keys of the core types (k8s.io/api `patchMergeKey`); None: replaced."""
SUPPORTED = {"apiVersion", "kind", "resources", "components", "patches", "images"}


def documents(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization(directory: Path) -> Obj:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(spec) - SUPPORTED
    if unsupported:
        raise NotImplementedError(f"{directory}: the fallback renderer does not do {sorted(unsupported)}; "
                                  "install kubectl or extend tests/test_deploy_manifests.py")
    return spec


def ident(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"]


def smp(live: Any, patch: Any) -> Any:
    """Strategic merge: maps merge (null deletes, `$patch: replace` replaces), keyed lists merge
    by key (`$patch: delete` removes an item)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = copy.deepcopy(live) if isinstance(live, dict) else {}
    for key, value in patch.items():
        if key == "$patch":
            continue
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list) and MERGE_KEYS.get(key) and isinstance(out.get(key), list):
            out[key] = merge_list(out[key], value, MERGE_KEYS[key])
        else:
            out[key] = smp(out.get(key), value)
    return out


def merge_list(live: list[Obj], patch: list[Obj], key: str) -> list[Obj]:
    """The patch's items first, in its order (merged into the live item of the same key),
    then the live items it does not name: the order kustomize gives."""
    by_key = {item.get(key): item for item in live}
    named = {item.get(key) for item in patch}
    merged = [smp(by_key.get(item.get(key), {}), item) for item in patch if item.get("$patch") != "delete"]
    return merged + [copy.deepcopy(item) for item in live if item.get(key) not in named]


def apply_patches(objects: list[Obj], spec: Obj, directory: Path) -> list[Obj]:
    for entry in spec.get("patches") or []:
        if set(entry) - {"path", "patch"}:
            raise NotImplementedError(f"{directory}: patch options {sorted(set(entry) - {'path', 'patch'})}")
        docs = documents(directory / entry["path"]) if "path" in entry else [
            d for d in yaml.safe_load_all(entry["patch"]) if d]
        for patch in docs:
            target = ident({**patch, "metadata": {**patch["metadata"]}})
            index = next((i for i, o in enumerate(objects) if ident(o) == target), None)
            assert index is not None, f"{directory}: patch for {target} matches no object"
            if patch.get("$patch") == "delete":
                del objects[index]
            else:
                objects[index] = smp(objects[index], patch)
    return objects


def pod_specs(obj: Obj) -> list[Obj]:
    spec = obj.get("spec") or {}
    if obj["kind"] == "Pod":
        return [spec]
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    template = spec.get("template") or {}
    return [template["spec"]] if "spec" in template else []


def containers(obj: Obj) -> list[Obj]:
    return [c for spec in pod_specs(obj) for c in spec.get("initContainers", []) + spec.get("containers", [])]


def apply_images(objects: list[Obj], spec: Obj) -> list[Obj]:
    for image in spec.get("images") or []:
        for obj in objects:
            for container in containers(obj):
                name, _, tag = container["image"].partition("@")[0].rpartition(":") if ":" in container[
                    "image"].rsplit("/", 1)[-1] else (container["image"], "", "")
                if name != image["name"]:
                    continue
                new_name = image.get("newName", name)
                if "digest" in image:
                    container["image"] = f"{new_name}@{image['digest']}"
                else:
                    new_tag = image.get("newTag", tag)
                    container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
    return objects


def render(directory: Path, objects: list[Obj] | None = None) -> list[Obj]:
    """`kustomize build` of `directory` (a Kustomization; with `objects`, a Component applied to them)."""
    spec = kustomization(directory)
    objects = copy.deepcopy(objects) if objects is not None else []
    for resource in spec.get("resources") or []:
        path = directory / resource
        objects += render(path) if path.is_dir() else documents(path)
    for component in spec.get("components") or []:
        objects = render(directory / component, objects)
    return apply_images(apply_patches(objects, spec, directory), spec)


def kubectl() -> str | None:
    found = shutil.which("kubectl")
    if found and subprocess.run([found, "kustomize", "--help"], capture_output=True).returncode == 0:
        return found
    return None


def kubectl_build(directory: Path) -> list[Obj]:
    done = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def build(directory: Path) -> list[Obj]:
    return kubectl_build(directory) if kubectl() else render(directory)


@cache
def overlay() -> tuple[Obj, ...]:
    return tuple(build(OVERLAY))


def with_external_redis(tmp_path: Path) -> Path:
    """A copy of deploy/ with an overlay that adds the external-redis component to the example."""
    copied = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copied)
    variant = copied / "overlays" / "external"
    variant.mkdir()
    (variant / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../example"], "components": ["../../components/external-redis"]}))
    return variant


def find(objects: Any, kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind} {name}: {len(matches)} found"
    return matches[0]


def validate(obj: Obj) -> None:
    if is_crd_kind(obj):  # the Prometheus Operator's kinds: against their CRDs' schemas
        validate_crd_object(obj)
        return
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{obj['kind']} {obj['metadata'].get('name')}: {exc.message} at "
                             f"{'.'.join(map(str, exc.path))}") from None


# --- every file ---------------------------------------------------------------------------------

def kustomizations() -> list[Path]:
    return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


def referenced() -> tuple[set[Path], set[Path]]:
    """(resource files, patch files) named by the kustomizations under deploy/."""
    resources, patches = set(), set()
    for directory in kustomizations():
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        resources |= {(directory / r).resolve() for r in spec.get("resources") or [] if (directory / r).is_file()}
        patches |= {(directory / p["path"]).resolve() for p in spec.get("patches") or [] if "path" in p}
    return resources, patches


def test_every_yaml_file_under_deploy_parses_and_is_used():
    resources, patches = referenced()
    for path in DEPLOY.rglob("*.y*ml"):
        assert documents(path), f"{path} is empty"
        if path.name != "kustomization.yaml":
            assert path.resolve() in resources | patches, f"{path} is named by no kustomization"


@pytest.mark.parametrize("path", sorted(referenced()[0]), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_validates_on_its_own(path: Path):
    for obj in documents(path):
        validate(obj)


def test_the_overlay_builds_into_valid_objects():
    objects = overlay()
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "Deployment", "Ingress",
                     "Namespace", "PodDisruptionBudget", "Service", "ServiceAccount", "StatefulSet"]
    for obj in objects:
        validate(obj)
    namespaced = [o for o in objects if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding")]
    assert {o["metadata"].get("namespace") for o in namespaced} == {"nicflow"}


def test_the_base_builds_into_valid_objects():
    for obj in build(BASE):
        validate(obj)


def test_the_external_redis_component_replaces_the_statefulset_with_a_secret(tmp_path):
    objects = build(with_external_redis(tmp_path))
    for obj in objects:
        validate(obj)
    assert not [o for o in objects if "redis" in o["metadata"]["name"]]
    for obj in objects:
        for container in containers(obj):
            if container["image"].endswith("nicflow:0.1.0"):
                env = {e["name"]: e for e in container["env"]}
                assert "REDIS_PASSWORD" not in env
                assert env["REDIS_URL"] == {"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {
                    "name": "nicflow-redis-url", "key": "REDIS_URL"}}}


@pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed: nothing to compare the renderer with")
@pytest.mark.parametrize("which", ["base", "overlay", "external-redis"])
def test_the_fallback_renderer_agrees_with_kubectl(which, tmp_path):
    directory = {"base": BASE, "overlay": OVERLAY}.get(which) or with_external_redis(tmp_path)
    ours = {ident(o): o for o in render(directory)}
    theirs = {ident(o): o for o in kubectl_build(directory)}
    assert ours == theirs


# --- what the processes need --------------------------------------------------------------------

def workloads(objects: Any) -> list[Obj]:
    return [o for o in objects if o["kind"] in ("Deployment", "DaemonSet", "StatefulSet")]


def test_every_container_has_requests_limits_and_both_probes():
    for obj in workloads(overlay()):
        for container in containers(obj):
            where = f"{obj['kind']} {obj['metadata']['name']}/{container['name']}"
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound) or {}), f"{where}: {bound}"
            assert container.get("livenessProbe") and container.get("readinessProbe"), where
            named = {p["name"] for p in container.get("ports", [])}
            for probe in (container["livenessProbe"], container["readinessProbe"]):
                handler = probe.get("httpGet") or probe.get("tcpSocket")
                if handler and isinstance(handler["port"], str):
                    assert handler["port"] in named, f"{where}: probe port {handler['port']}"


def test_env_references_come_after_the_variables_they_name():
    """`$(VAR)` in an env value expands only when VAR is defined earlier in the list."""
    for obj in workloads(overlay()):
        for container in containers(obj):
            seen: set[str] = set()
            for item in container.get("env", []):
                for name in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", item.get("value", "")):
                    assert name in seen, f"{obj['metadata']['name']}: {item['name']} uses $({name}) before it is set"
                seen.add(item["name"])


def test_the_nicflow_processes_reach_redis_with_the_password_from_the_secret():
    for name, kind in [("nicflow-controller", "Deployment"), ("nicflow-api", "Deployment"),
                       ("nicflow-agent", "DaemonSet")]:
        container = containers(find(overlay(), kind, name))[0]
        env = {e["name"]: e for e in container["env"]}
        assert env["REDIS_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "nicflow-redis", "key": "password"}}
        assert env["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@nicflow-redis:6379/0"


def test_redis_persists_with_aof_and_reads_its_password_from_the_secret():
    redis = find(overlay(), "StatefulSet", "nicflow-redis")
    config = find(overlay(), "ConfigMap", "nicflow-redis-config")["data"]["redis.conf"].splitlines()
    assert {"appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction",
            "hash-max-listpack-value 1024"} <= set(config)
    container = containers(redis)[0]
    assert "requirepass" in container["command"][-1] and "$REDIS_PASSWORD" in container["command"][-1]
    assert "--requirepass" not in " ".join(container["command"]), "the password stays off the command line"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    service = find(overlay(), "Service", "nicflow-redis")
    assert service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()


def test_the_controller_runs_twice_behind_a_disruption_budget():
    controller = find(overlay(), "Deployment", "nicflow-controller")
    assert controller["spec"]["replicas"] == 2
    pdb = find(overlay(), "PodDisruptionBudget", "nicflow-controller")
    labels = controller["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= pdb["spec"]["minAvailable"] < controller["spec"]["replicas"]
    args = containers(controller)[0]["args"]
    assert args[0] == "controller" and args[args.index("--metrics-port") + 1] == "9478"


def test_the_api_is_served_through_its_service_and_the_example_ingress():
    api = find(overlay(), "Deployment", "nicflow-api")
    service = find(overlay(), "Service", "nicflow-api")
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    container = containers(api)[0]
    assert container["args"] == ["api"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NICFLOW_API_HOST"] == "0.0.0.0" and env["NICFLOW_API_PORT"] == "8080"  # noqa: S104 - asserted
    assert {"name": "http", "containerPort": 8080} in container["ports"]
    backend = find(overlay(), "Ingress", "nicflow-api")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "nicflow-api" and backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_the_example_authorization_file_loads(tmp_path):
    from workers.api.security.authz import load_authz

    config_map = find(overlay(), "ConfigMap", "nicflow-api-config")
    mount = next(m for m in containers(find(overlay(), "Deployment", "nicflow-api"))[0]["volumeMounts"]
                 if m["name"] == "config")
    env = {e["name"]: e.get("value") for e in containers(find(overlay(), "Deployment", "nicflow-api"))[0]["env"]}
    assert env["NICFLOW_AUTHZ_FILE"] == f"{mount['mountPath']}/authz.yaml"
    path = tmp_path / "authz.yaml"
    path.write_text(config_map["data"]["authz.yaml"])
    assert load_authz(path).actions


def test_api_and_controller_run_as_the_image_user_without_privileges():
    for name in ("nicflow-api", "nicflow-controller"):
        spec = pod_specs(find(overlay(), "Deployment", name))[0]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == NON_ROOT_UID
        context = spec["containers"][0]["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]
        assert context["readOnlyRootFilesystem"] is True
        assert {"name": "tmp", "mountPath": "/tmp"} in spec["containers"][0]["volumeMounts"]  # noqa: S108 - asserted


def test_the_agent_daemonset():
    agent = find(overlay(), "DaemonSet", "nicflow-agent")
    labels = agent["spec"]["template"]["metadata"]["labels"]
    assert AGENT_LABELS.items() <= labels.items(), "the drain spares pods with these labels"
    spec = pod_specs(agent)[0]
    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["nodeSelector"][NFD_LABEL] == "true"
    unschedulable = {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}
    assert unschedulable in spec["tolerations"]
    container = spec["containers"][0]
    assert container["securityContext"]["privileged"] is True and container["securityContext"]["runAsUser"] == 0
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["NICFLOW_HOST_ROOT"]["value"] == "/host"
    assert env["PATH"]["value"].startswith("/usr/local/lib/nicflow/host-tools:")
    host = next(v for v in spec["volumes"] if v["name"] == "host")
    assert host["hostPath"]["path"] == "/"
    assert {"name": "host", "mountPath": "/host", "mountPropagation": "HostToContainer"} in container["volumeMounts"]
    assert container["args"][0] == "agent" and "--node" not in container["args"], "NODE_NAME names the node"
    metrics = next(p for p in container["ports"] if p["name"] == "metrics")
    assert metrics["hostPort"] == metrics["containerPort"] == int(container["args"][container["args"].index(
        "--metrics-port") + 1])


def test_the_base_selects_the_nfd_label_and_the_overlay_may_narrow_it():
    base_agent = find(build(BASE), "DaemonSet", "nicflow-agent")
    assert pod_specs(base_agent)[0]["nodeSelector"] == {NFD_LABEL: "true"}
    assert pod_specs(find(overlay(), "DaemonSet", "nicflow-agent"))[0]["nodeSelector"] == {
        NFD_LABEL: "true", "example.com/pool": "nic-offload"}


def test_the_overlay_pins_the_nicflow_image_and_every_image_has_a_tag():
    for obj in workloads(overlay()):
        for container in containers(obj):
            image = container["image"]
            assert re.search(r"(:[\w][\w.-]*|@sha256:[0-9a-f]{64})$", image.rsplit("/", 1)[-1]), image
            assert not image.endswith(":latest"), image
            if container["name"] in ("api", "controller", "agent"):
                assert image == "registry.example.com/platform/nicflow:0.1.0"


def test_the_privileged_agent_has_a_namespace_that_admits_it():
    namespace = find(overlay(), "Namespace", "nicflow")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_every_pod_but_the_agent_meets_the_restricted_pod_security_profile():
    for obj in workloads(overlay()):
        if obj["metadata"]["name"] == "nicflow-agent":
            continue
        spec = pod_specs(obj)[0]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
        assert not any("hostPath" in v for v in spec.get("volumes", []))
        for container in containers(obj):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
            assert not context.get("privileged") and context.get("runAsUser", 1) != 0


def test_nicflow_s_own_control_plane_prefers_nodes_it_does_not_drain():
    for kind, name in [("Deployment", "nicflow-controller"), ("Deployment", "nicflow-api"),
                       ("StatefulSet", "nicflow-redis")]:
        preferred = pod_specs(find(overlay(), kind, name))[0]["affinity"]["nodeAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"]
        assert {"key": NFD_LABEL, "operator": "DoesNotExist"} in preferred[0]["preference"]["matchExpressions"], name


def test_service_accounts_exist_for_every_pod():
    accounts = {o["metadata"]["name"] for o in overlay() if o["kind"] == "ServiceAccount"}
    for obj in workloads(overlay()):
        assert pod_specs(obj)[0]["serviceAccountName"] in accounts
