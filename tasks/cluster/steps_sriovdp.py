"""sriov-device-plugin: the SR-IOV network device plugin and its `sriovdp-config`.

The ConfigMap is the Kube-OVN page's (resourcePrefix corigine.com,
resourceName agilio_sriov, selectors vendors 19ee, devices 6003, drivers
nfp_netvf), every value a parameter. The DaemonSet is the plugin project's
`sriovdp-daemonset.yaml` with the image pinned by parameter. The plugin reads
its configuration only when it starts: the pod template carries a hash of the
configuration, so a changed ConfigMap rolls the pods.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field, field_validator

from tasks.cluster.objects import ApplyObjectsStep, ObjectsParams, ObjectsState, check_image, config_string, live_field
from tasks.cluster.surface import DNS1123_LABEL, DNS1123_SUBDOMAIN, ClusterSurface, Labels, Manifest, check_each

HEX4 = r"^[0-9a-f]{4}$"
DRIVER = r"^[a-z0-9_]{1,32}$"
RESOURCE_NAME = r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"
DP_LABELS = {"name": "sriov-device-plugin", "tier": "node", "app": "sriovdp"}
CONFIG_HASH = "nicflow.io/config-hash"


class SriovDpParams(ObjectsParams):
    namespace: str = Field("kube-system", pattern=DNS1123_LABEL)
    config_map: str = Field("sriovdp-config", pattern=DNS1123_SUBDOMAIN)
    daemonset: str = Field("kube-sriov-device-plugin", pattern=DNS1123_SUBDOMAIN)
    service_account: str = Field("sriov-device-plugin", pattern=DNS1123_SUBDOMAIN)
    resource_prefix: str = Field("corigine.com", pattern=DNS1123_SUBDOMAIN)
    resource_name: str = Field("agilio_sriov", pattern=RESOURCE_NAME)
    vendors: list[str] = Field(default_factory=lambda: ["19ee"], min_length=1, max_length=8)
    devices: list[str] = Field(default_factory=lambda: ["6003"], min_length=1, max_length=8)
    drivers: list[str] = Field(default_factory=lambda: ["nfp_netvf"], min_length=1, max_length=8)
    image: str = "ghcr.io/k8snetworkplumbingwg/sriov-network-device-plugin:v3.7.0"
    """Pinned by tag or digest; `latest` is refused."""
    node_selector: Labels = Field(default_factory=lambda: {"kubernetes.io/os": "linux"})

    @field_validator("vendors", "devices")
    @classmethod
    def _hex_ids(cls, values: list[str]) -> list[str]:
        return check_each(values, HEX4, "a 4-digit lowercase hex PCI id")

    @field_validator("drivers")
    @classmethod
    def _drivers(cls, values: list[str]) -> list[str]:
        return check_each(values, DRIVER, "a kernel driver name")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return check_image(value)

    @property
    def resource(self) -> str:
        return f"{self.resource_prefix}/{self.resource_name}"


def device_plugin_config(params: SriovDpParams) -> str:
    """config.json as the Kube-OVN page writes it."""
    return json.dumps({"resourceList": [{
        "resourcePrefix": params.resource_prefix,
        "resourceName": params.resource_name,
        "selectors": {"vendors": params.vendors, "devices": params.devices, "drivers": params.drivers},
    }]}, indent=2) + "\n"


def config_hash(config: str) -> str:
    canonical = json.dumps(json.loads(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _host_path(name: str, path: str, kind: str | None = None) -> Manifest:
    return {"name": name, "hostPath": {"path": path, **({"type": kind} if kind else {})}}


def device_plugin_manifests(params: SriovDpParams, config: str) -> list[Manifest]:
    ns = params.namespace
    service_account = {"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": params.service_account, "namespace": ns}}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": params.config_map, "namespace": ns},
                  "data": {"config.json": config}}
    container = {
        "name": "kube-sriovdp", "image": params.image, "imagePullPolicy": "IfNotPresent",
        "args": ["--log-dir=sriovdp", "--log-level=10"],
        "securityContext": {"privileged": True},
        "resources": {"requests": {"cpu": "250m", "memory": "40Mi"}, "limits": {"cpu": "1", "memory": "200Mi"}},
        "volumeMounts": [
            {"name": "devicesock", "mountPath": "/var/lib/kubelet/device-plugins"},
            {"name": "plugins-registry", "mountPath": "/var/lib/kubelet/plugins_registry"},
            {"name": "log", "mountPath": "/var/log"},
            {"name": "config-volume", "mountPath": "/etc/pcidp"},
            {"name": "device-info", "mountPath": "/var/run/k8s.cni.cncf.io/devinfo/dp"},
        ],
    }
    daemonset = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": params.daemonset, "namespace": ns, "labels": {"tier": "node", "app": "sriovdp"}},
        "spec": {
            "selector": {"matchLabels": {"name": DP_LABELS["name"]}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": dict(DP_LABELS), "annotations": {CONFIG_HASH: config_hash(config)}},
                "spec": {
                    "hostNetwork": True,
                    "nodeSelector": dict(params.node_selector),
                    "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                    "serviceAccountName": params.service_account,
                    "containers": [container],
                    "volumes": [
                        _host_path("devicesock", "/var/lib/kubelet/device-plugins"),
                        _host_path("plugins-registry", "/var/lib/kubelet/plugins_registry"),
                        _host_path("log", "/var/log"),
                        _host_path("device-info", "/var/run/k8s.cni.cncf.io/devinfo/dp", "DirectoryOrCreate"),
                        {"name": "config-volume", "configMap": {
                            "name": params.config_map, "items": [{"key": "config.json", "path": "config.json"}]}},
                    ],
                },
            },
        },
    }
    return [service_account, config_map, daemonset]


class SriovDevicePlugin(ApplyObjectsStep[SriovDpParams]):
    """ConfigMap sriovdp-config and the SR-IOV network device plugin DaemonSet, rolled out."""

    type_name = "sriov-device-plugin"
    params_model = SriovDpParams
    description = "Server-side apply the SR-IOV device plugin (corigine.com/agilio_sriov) and wait for its rollout."

    def manifests(self, params: SriovDpParams, live: ClusterSurface | None = None) -> list[Manifest]:
        ours = device_plugin_config(params)
        have = live_field(live, "v1", "ConfigMap", params.config_map, params.namespace, "data", "config.json")
        return device_plugin_manifests(params, config_string(ours, have))

    def outputs(self, state: ObjectsState, params: SriovDpParams) -> dict[str, Any]:
        return {"sriov_resource": params.resource, "device_plugin_namespace": params.namespace}
