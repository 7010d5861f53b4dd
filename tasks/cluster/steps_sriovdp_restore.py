"""restore-device-plugin-config: an adopted SR-IOV device plugin's config.json as nicflow found it.

The rollback's half of sriov-device-plugin. The plugin is found as that step
finds one to adopt (sriovdp_adopt.find_existing: the upstream manifest's labels,
or a ConfigMap naming the resource). When nicflow widened its config.json, the
text it replaced is in the ConfigMap's `nicflow.io/original-config` annotation:
that text goes back under the one key, and the annotation goes, in one patch
(another installer owns the ConfigMap: not a server-side apply). Nothing
recorded: nothing to restore, nothing is written. nicflow's own plugin (none
adopted) keeps its config: it is nicflow's, and with no VFs left it registers
none.

The plugin reads its config only when it starts (cmd/sriovdp/main.go, v3.7.0):
the rollback's restart-device-plugin restarts its pod on each node inside that
node's drain, after the VFs are gone, so the node's allocatable drops to 0.
The outputs are sriov-device-plugin's (`device_plugin`, `sriov_resource`), so
restart-device-plugin finds the plugin the same way in either pipeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from tasks.cluster import sriovdp_config as dp
from tasks.cluster.sriovdp_adopt import ORIGINAL_CONFIG, Plugin, find_existing, recorded_config
from tasks.cluster.steps_sriovdp import POD_SELECTOR, RESOURCE_NAME
from tasks.cluster.surface import DNS1123_LABEL, DNS1123_SUBDOMAIN
from workflows.step import Change, Step, StepContext, StepParams


class RestoreDpParams(StepParams):
    namespace: str = Field("kube-system", pattern=DNS1123_LABEL)
    """Where the device plugin runs."""
    resource_prefix: str = Field("corigine.com", pattern=DNS1123_SUBDOMAIN)
    """resourcePrefix of the resource the sriov-device-plugin step configured."""
    resource_name: str = Field("agilio_sriov", pattern=RESOURCE_NAME)
    """resourceName of that resource."""
    config_map: str = Field("sriovdp-config", pattern=DNS1123_SUBDOMAIN)
    """nicflow's own plugin's ConfigMap, when none is adopted."""
    daemonset: str = Field("kube-sriov-device-plugin", pattern=DNS1123_SUBDOMAIN)
    """nicflow's own plugin's DaemonSet, when none is adopted."""

    @property
    def resource(self) -> str:
        return f"{self.resource_prefix}/{self.resource_name}"


@dataclass(frozen=True)
class RestoreState:
    plugin: Plugin
    live: str | None
    original: str | None
    """The recorded config.json; None when nicflow never changed this plugin's."""


def _selectors(config: str | None, resource: str) -> str | None:
    """The resource's selector ids, for a short before/after."""
    try:
        entry = dp.entry_for(config, resource) if config is not None else None
    except dp.ConfigError:
        return None
    if entry is None:
        return None
    return json.dumps([{k: s[k] for k in dp.ID_SELECTORS if k in s} for s in dp.selector_objects(entry)],
                      sort_keys=True)


class RestoreDevicePluginConfig(Step[RestoreDpParams, RestoreState]):
    """An adopted device plugin's ConfigMap holds the config.json nicflow found there."""

    type_name = "restore-device-plugin-config"
    scope = "cluster"
    params_model = RestoreDpParams
    description = "Put back the config.json an adopted SR-IOV device plugin had before nicflow widened it."

    def observe(self, ctx: StepContext, params: RestoreDpParams) -> RestoreState:
        plugin = find_existing(ctx.surface, params.namespace, params.resource)
        if plugin is None:
            own = Plugin(params.namespace, (params.daemonset,), params.config_map, dp.CONFIG_KEY,
                         dict(POD_SELECTOR), None, adopted=False)
            return RestoreState(own, None, None)
        return RestoreState(plugin, plugin.config, recorded_config(ctx.surface, plugin))

    def plan(self, state: RestoreState, params: RestoreDpParams) -> list[Change]:
        if state.original is None:
            return []
        plugin = state.plugin
        return [Change("restore", f"ConfigMap {plugin.namespace}/{plugin.config_map} {plugin.config_key}",
                       _selectors(state.live, params.resource), _selectors(state.original, params.resource))]

    def apply(self, ctx: StepContext, params: RestoreDpParams, state: RestoreState, changes: list[Change]) -> None:
        plugin = state.plugin
        ctx.surface.patch("v1", "ConfigMap", plugin.config_map, plugin.namespace, {
            "data": {plugin.config_key: state.original}, "metadata": {"annotations": {ORIGINAL_CONFIG: None}}})

    def outputs(self, state: RestoreState, params: RestoreDpParams) -> dict[str, Any]:
        return {"sriov_resource": params.resource, "device_plugin_namespace": state.plugin.namespace,
                "device_plugin": state.plugin.as_fact()}

    def evidence(self, state: RestoreState) -> str:
        plugin = state.plugin
        if not plugin.adopted:
            return f"no adopted device plugin in {plugin.namespace}: nicflow's own keeps its config\n"
        recorded = "none recorded" if state.original is None else f"recorded:\n{state.original}"
        return f"ConfigMap {plugin.namespace}/{plugin.config_map} {plugin.config_key}:\n{state.live}\n{recorded}\n"
