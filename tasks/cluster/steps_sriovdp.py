"""sriov-device-plugin: the SR-IOV network device plugin and its `sriovdp-config`.

The ConfigMap is the Kube-OVN page's (resourcePrefix corigine.com,
resourceName agilio_sriov, selectors vendors, devices, drivers nfp_netvf),
every value a parameter. The selectors cover the cards the run can meet:
`vendors` left empty means the Agilio vendors Node Feature Discovery labels
on the cluster's nodes (`feature.node.kubernetes.io/pci-19ee.present`,
`pci-1da8.present`; both when no node carries either label), `devices` left
empty means every VF id the nfp_netvf driver binds (3803, 6003); values the
live config already holds are kept, so a card restart-device-plugin added for
a node stays covered. restart-device-plugin, inside each node's drain window,
adds the node's detected card when it is still not covered.

An SR-IOV device plugin already running in the namespace (the upstream
manifest's labels, or a ConfigMap naming the resource: see sriovdp_adopt) is
adopted instead of installing a second one: only its ConfigMap is changed,
by a targeted patch (server-side apply would conflict with the manager that
created it), and never narrowed. Otherwise the DaemonSet is the plugin
project's `sriovdp-daemonset.yaml` with the image pinned by parameter. The
plugin reads its configuration only when it starts: nicflow's pod template
carries a hash of the configuration, so a changed ConfigMap rolls its pods;
an adopted plugin's pods take it when restart-device-plugin restarts them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from tasks.cluster import sriovdp_config as dp
from tasks.cluster.objects import (
    ApplyObjectsStep,
    ObjectsParams,
    ObjectsState,
    check_image,
    config_string,
    observe_objects,
)
from tasks.cluster.sriovdp_adopt import CONFIG_HASH, Plugin, config_patch, find_existing
from tasks.cluster.surface import DNS1123_LABEL, DNS1123_SUBDOMAIN, ClusterSurface, Labels, Manifest, check_each
from workflows.errors import PermanentError
from workflows.step import Change, StepContext

HEX4 = r"^[0-9a-f]{4}$"
DRIVER = r"^[a-z0-9_-]{1,32}$"
RESOURCE_NAME = r"^[A-Za-z0-9_-]{1,63}$"
"""What the plugin accepts (validConfigs: ^[a-zA-Z0-9_-]+$)."""
DP_LABELS = {"name": "sriov-device-plugin", "tier": "node", "app": "sriovdp"}
POD_SELECTOR = {"name": DP_LABELS["name"]}


class SriovDpParams(ObjectsParams):
    namespace: str = Field("kube-system", pattern=DNS1123_LABEL)
    """Where the device plugin runs (or an existing one is adopted from)."""
    config_map: str = Field("sriovdp-config", pattern=DNS1123_SUBDOMAIN)
    """The ConfigMap holding the plugin's config.json."""
    daemonset: str = Field("kube-sriov-device-plugin", pattern=DNS1123_SUBDOMAIN)
    """The plugin's DaemonSet, when nicflow installs it."""
    service_account: str = Field("sriov-device-plugin", pattern=DNS1123_SUBDOMAIN)
    """The ServiceAccount its pods run as, when nicflow installs it."""
    resource_prefix: str = Field("corigine.com", pattern=DNS1123_SUBDOMAIN)
    """resourcePrefix of the VF resource pods request."""
    resource_name: str = Field("agilio_sriov", pattern=RESOURCE_NAME)
    """resourceName of the VF resource (with the prefix: corigine.com/agilio_sriov)."""
    vendors: list[str] = Field(default_factory=list, max_length=8)
    """PCI vendor ids; empty: the Agilio vendors NFD shows on the nodes."""
    devices: list[str] = Field(default_factory=list, max_length=8)
    """VF device ids; empty: every VF id nfp_netvf binds (3803, 6003)."""
    drivers: list[str] = Field(default_factory=lambda: [dp.VF_DRIVER], min_length=1, max_length=8)
    """Kernel drivers of the VFs the plugin selects."""
    adopt: bool = True
    """Use an SR-IOV device plugin already running in `namespace` instead of installing one."""
    image: str = "ghcr.io/k8snetworkplumbingwg/sriov-network-device-plugin:v3.7.0"
    """Pinned by tag or digest; `latest` is refused."""
    node_selector: Labels = Field(default_factory=lambda: {"kubernetes.io/os": "linux"})
    """nodeSelector of the plugin's DaemonSet, when nicflow installs it."""

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


def nfd_vendors(surface: ClusterSurface) -> list[str]:
    """Agilio vendors Node Feature Discovery labels on some node of the cluster."""
    return [v for v in dp.AGILIO_VENDORS if surface.list_nodes({dp.NFD_LABEL.format(vendor=v): "true"})]


def _first_selectors(config: str | None, resource: str) -> dict[str, Any]:
    try:
        entry = dp.entry_for(config, resource) if config is not None else None
    except dp.ConfigError:
        return {}
    objects = dp.selector_objects(entry) if entry else []
    return objects[0] if objects else {}


def wanted_selectors(params: SriovDpParams, nfd: list[str]) -> dict[str, list[str]]:
    return {"vendors": list(params.vendors) or (nfd or list(dp.AGILIO_VENDORS)),
            "devices": list(params.devices) or list(dp.VF_DEVICES), "drivers": list(params.drivers)}


def device_plugin_config(params: SriovDpParams, nfd: list[str] | None = None, live: str | None = None) -> str:
    """nicflow's own config.json as the Kube-OVN page writes it; the lists left to nicflow
    keep what the live config holds."""
    wanted = wanted_selectors(params, list(nfd or []))
    have = _first_selectors(live, params.resource)
    selectors = {key: (dp.union(have.get(key) or [], values) if not getattr(params, key) else values)
                 for key, values in wanted.items()}
    return json.dumps({"resourceList": [{
        "resourcePrefix": params.resource_prefix, "resourceName": params.resource_name, "selectors": selectors,
    }]}, indent=2) + "\n"


def adopted_config(params: SriovDpParams, nfd: list[str], live: str | None, where: str) -> str:
    """Another installer's config.json, widened to cover the run's cards: our entry added
    when missing, else its first selector object's id lists extended (never narrowed)."""
    if live is None:
        return device_plugin_config(params, nfd)
    try:
        dp.entries(live)
        parsed = json.loads(live)
    except dp.ConfigError as exc:
        raise PermanentError(f"{where} holds a config.json the device plugin refuses ({exc}); fix it, or set "
                             "adopt=false to install nicflow's own plugin") from None
    entry = next((e for e in parsed["resourceList"] if dp.resource_of(e) == params.resource), None)
    if entry is None:
        parsed["resourceList"].append(json.loads(device_plugin_config(params, nfd))["resourceList"][0])
        return json.dumps(parsed, indent=4) + "\n"
    first = (dp.selector_objects(entry) or [{}])[0]
    for key, values in wanted_selectors(params, nfd).items():
        if first.get(key) and not set(values) <= set(first[key]):  # an empty list already takes every value
            first[key] = dp.union(first[key], values)
    return config_string(json.dumps(parsed, indent=4) + "\n", live)


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


@dataclass(frozen=True)
class DpState(ObjectsState):
    plugin: Plugin | None = None
    """The device plugin that serves the resource; adopted, or nicflow's own."""
    new_config: str | None = None
    """config.json to patch into an adopted plugin's ConfigMap; None when it already covers the run."""

    @property
    def converged(self) -> bool:
        return super().converged and self.new_config is None


def _selectors_text(config: str | None, resource: str) -> str | None:
    found = _first_selectors(config, resource)
    return json.dumps({k: found[k] for k in dp.ID_SELECTORS if k in found}, sort_keys=True) if found else None


class SriovDevicePlugin(ApplyObjectsStep[SriovDpParams]):
    """ConfigMap sriovdp-config and the SR-IOV network device plugin DaemonSet, rolled out;
    or an existing device plugin adopted, its ConfigMap covering the run's cards."""

    type_name = "sriov-device-plugin"
    params_model = SriovDpParams
    description = "Adopt or server-side apply the SR-IOV device plugin (corigine.com/agilio_sriov)."

    def manifests(self, params: SriovDpParams, live: ClusterSurface | None = None) -> list[Manifest]:
        nfd = nfd_vendors(live) if live is not None else []
        have = live.get_config_map(params.namespace, params.config_map) if live is not None else None
        current = (have or {}).get(dp.CONFIG_KEY)
        return device_plugin_manifests(params, config_string(device_plugin_config(params, nfd, current), current))

    def observe(self, ctx: StepContext, params: SriovDpParams) -> DpState:
        existing = find_existing(ctx.surface, params.namespace, params.resource) if params.adopt else None
        if existing is None:
            own = observe_objects(ctx.surface, self.manifests(params, ctx.surface))
            plugin = Plugin(params.namespace, (params.daemonset,), params.config_map, dp.CONFIG_KEY,
                            dict(POD_SELECTOR), None, adopted=False)
            return DpState(own.objects, own.waiting, plugin)
        where = f"ConfigMap {existing.namespace}/{existing.config_map} (key {existing.config_key})"
        config = adopted_config(params, nfd_vendors(ctx.surface), existing.config, where)
        return DpState([], [], existing, None if config == existing.config else config)

    # The overrides take DpState and SriovDpParams, narrower than ApplyObjectsStep's ObjectsState and
    # ObjectsParams (hence the ignores): the engine hands each step only the state its observe made.
    def plan(self, state: DpState, params: SriovDpParams) -> list[Change]:  # type: ignore[override]
        plugin = state.plugin
        if plugin is None or not plugin.adopted:
            return super().plan(state, params)
        if state.new_config is None:
            return []
        target = f"ConfigMap {plugin.namespace}/{plugin.config_map} {plugin.config_key}"
        return [Change("adopt", f"DaemonSet {plugin.ref}", None, f"adopt existing device plugin {plugin.ref}"),
                Change("patch" if plugin.config is not None else "create", target,
                       _selectors_text(plugin.config, params.resource),
                       _selectors_text(state.new_config, params.resource))]

    def apply(self, ctx: StepContext, params: SriovDpParams, state: DpState,  # type: ignore[override]
              changes: list[Change]) -> None:
        plugin = state.plugin
        if plugin is None or not plugin.adopted:
            return super().apply(ctx, params, state, changes)
        assert state.new_config is not None  # plan returned nothing otherwise
        if ctx.surface.get_config_map(plugin.namespace, plugin.config_map) is None:
            ctx.surface.apply_config_map(plugin.namespace, plugin.config_map, {plugin.config_key: state.new_config})
        else:  # another manager owns it: exactly the one key, not a server-side apply
            ctx.surface.patch("v1", "ConfigMap", plugin.config_map, plugin.namespace,
                              config_patch(ctx.surface, plugin, plugin.config, state.new_config))
        return None

    def outputs(self, state: DpState, params: SriovDpParams) -> dict[str, Any]:  # type: ignore[override]
        assert state.plugin is not None
        return {"sriov_resource": params.resource, "device_plugin_namespace": state.plugin.namespace,
                "device_plugin": state.plugin.as_fact()}

    def evidence(self, state: DpState) -> str:  # type: ignore[override]
        plugin = state.plugin
        if plugin is None or not plugin.adopted:
            return super().evidence(state)
        return (f"adopted device plugin {plugin.ref} (DaemonSets {', '.join(plugin.daemonsets)}), ConfigMap "
                f"{plugin.namespace}/{plugin.config_map} key {plugin.config_key}\n{state.new_config or plugin.config}")
