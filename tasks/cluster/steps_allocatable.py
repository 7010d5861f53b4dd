"""restart-device-plugin: after VFs change on a node, the scheduler must see them.

The SR-IOV device plugin does not rescan: it registers the VFs it found when
it started. Expected allocatable `corigine.com/agilio_sriov` is what the
plugin will find on the node: every VF its config selects, summed over the
node's cards (card_facts: the chosen card's `numvfs` from create-vfs, the
other cards' VFs from detect-nic), counted by the plugin's own rules
(sriovdp_config). When the node's card is not covered by the plugin's
selectors (a Corigine 1da8 or NFP3800 card NFD did not show the cluster
step), its vendor and VF id are added to the plugin's ConfigMap first, by a
patch of that one key, inside the node's drain window; nicflow's own
DaemonSet also gets the new config hash, as the cluster step would write it.
Then, when allocatable differs, the plugin pod on that node is deleted (its
DaemonSet starts a new one) and the step waits, bounded, until allocatable is
as expected; running out of time is a transient failure. Already as
expected: nothing is touched.

The plugin (namespace, pods, ConfigMap) is the one the sriov-device-plugin
step installed or adopted (its `device_plugin` output); parameters override.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from tasks.cluster import sriovdp_config as dp
from tasks.cluster.card_facts import CardIds, chosen_card, node_vfs
from tasks.cluster.sriovdp_adopt import CONFIG_HASH, Plugin, config_patch
from tasks.cluster.steps_drain import FACT_NAME, node_of
from tasks.cluster.steps_sriovdp import config_hash
from tasks.cluster.surface import DNS1123_LABEL, EXTENDED_RESOURCE, ClusterSurface, Labels, NodeView, PodView
from workflows.errors import NotYet, NotYetKnown, PermanentError, StepTimeout, TransientError
from workflows.step import Change, Step, StepContext, StepParams

DEFAULT_NAMESPACE = "kube-system"
DEFAULT_SELECTOR = {"app": "sriovdp"}
DEFAULT_RESOURCE = "corigine.com/agilio_sriov"
PRODUCER = "sriov-device-plugin"
"""The step type that installs the plugin this step restarts: its ConfigMap and pods come from it."""


class RestartDpParams(StepParams):
    namespace: str | None = Field(None, pattern=DNS1123_LABEL)
    """The device plugin's namespace; unset: the sriov-device-plugin step's, else kube-system."""
    selector: Labels | None = None
    """Labels of the device plugin's pods; unset: its DaemonSet's selector, else app=sriovdp."""
    resource: str | None = Field(None, pattern=EXTENDED_RESOURCE)
    """Unset: the sriov-device-plugin step's `sriov_resource`, else corigine.com/agilio_sriov."""
    numvfs_fact: str = Field("numvfs", pattern=FACT_NAME)
    """The fact holding the chosen card's VF count (corigine-create-vfs outputs `numvfs`)."""
    extend_selectors: bool = True
    """Add the node's card to the plugin's selectors when they do not cover it; else fail naming it."""
    timeout: float = Field(120.0, gt=0, le=3600)
    """Seconds to wait for allocatable to be as expected after the restart."""
    poll_interval: float = Field(2.0, gt=0, le=60)
    """Seconds between looks at the node's allocatable."""


@dataclass(frozen=True)
class Target:
    """Which plugin, resource and card this node's step is about."""

    namespace: str
    selector: dict[str, str]
    resource: str
    plugin: Plugin | None
    card: CardIds | None


@dataclass(frozen=True)
class AllocatableState:
    node: NodeView
    expected: int
    allocatable: int | None
    plugin_pods: list[PodView]
    config: str | None
    """The plugin's live config.json (None when not known)."""
    new_config: str | None
    """config.json widened to the node's card; None when it already covers it."""
    config_ref: str = "SR-IOV device plugin config"

    @property
    def converged(self) -> bool:
        registered = self.allocatable if self.allocatable is not None else 0  # never registered: none
        return registered == self.expected and self.new_config is None


def _allocatable(node: NodeView, resource: str) -> int | None:
    value = node.allocatable.get(resource)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def target_of(ctx: StepContext, params: RestartDpParams) -> Target:
    plugin = Plugin.of_fact(ctx.facts.get("device_plugin"))
    resource = params.resource or ctx.facts.get("sriov_resource") or DEFAULT_RESOURCE
    if not isinstance(resource, str) or not re.fullmatch(EXTENDED_RESOURCE, resource):
        raise PermanentError(f"fact sriov_resource {resource!r} is not an extended resource name")
    return Target(params.namespace or (plugin.namespace if plugin else DEFAULT_NAMESPACE),
                  dict(params.selector or (plugin.pod_selector if plugin else DEFAULT_SELECTOR)),
                  resource, plugin, chosen_card(ctx.facts))


def _live_config(surface: ClusterSurface, plugin: Plugin | None) -> str | None:
    if plugin is None:
        return None
    data = surface.get_config_map(plugin.namespace, plugin.config_map)
    if data is None or plugin.config_key not in data:
        raise NotYetKnown(f"ConfigMap {plugin.namespace}/{plugin.config_map} (key {plugin.config_key}) of the "
                          "SR-IOV device plugin is missing: is sriov-device-plugin done?", after=PRODUCER)
    return data[plugin.config_key]


def widened(config: str, target: Target, params: RestartDpParams) -> str | None:
    """The config widened to the node's card, None when it covers the card already."""
    card, plugin = target.card, target.plugin
    assert card is not None and plugin is not None
    where = f"ConfigMap {plugin.namespace}/{plugin.config_map}"
    try:
        entry = dp.entry_for(config, target.resource)
        if entry is None:
            raise NotYetKnown(f"{where} has no entry for {target.resource}: is sriov-device-plugin done?",
                              after=PRODUCER)
        if dp.covers(entry, card.vendor, card.vf_device):
            return None
        if not params.extend_selectors:
            raise PermanentError(f"{card.describe()} are not selected by {target.resource} in {where} and "
                                 "extend_selectors is false: add vendor and device to its selectors")
        return dp.extended(config, target.resource, card.vendor, card.vf_device)
    except dp.ConfigError as exc:
        raise PermanentError(f"{where}: {exc}; {card.describe()} cannot be registered") from None


class RestartDevicePlugin(Step[RestartDpParams, AllocatableState]):
    """Node allocatable `corigine.com/agilio_sriov` equals the VFs the plugin selects on the node."""

    type_name = "restart-device-plugin"
    runs_on = "cluster"
    params_model = RestartDpParams
    description = "Cover the node's card in the device plugin's config; restart its pod until allocatable is right."

    def observe(self, ctx: StepContext, params: RestartDpParams) -> AllocatableState:
        raw = ctx.facts.get(params.numvfs_fact)
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            raise PermanentError(f"fact {params.numvfs_fact!r} is {raw!r}, not a VF count: "
                                 "a step that creates VFs (corigine-create-vfs) must run before this one")
        target = target_of(ctx, params)
        config = _live_config(ctx.surface, target.plugin)
        # a card without VFs (the rollback's) gives the plugin nothing to select: nothing to widen
        new_config = widened(config, target, params) if config is not None and target.card and raw else None
        effective = new_config or config
        if effective is None or target.card is None:
            expected = raw  # the plugin's config or the card's ids unknown: the chosen card's VFs
        else:
            expected = dp.pool_sizes(effective, node_vfs(ctx.facts, raw)).get(target.resource, 0)
        node = node_of(ctx)
        pods = [p for p in ctx.surface.list_pods(namespace=target.namespace, node=node.name, selector=target.selector)
                if not p.deleting]
        plugin = target.plugin
        where = f"ConfigMap {plugin.namespace}/{plugin.config_map} {plugin.config_key}" if plugin else \
            "SR-IOV device plugin config"
        return AllocatableState(node, expected, _allocatable(node, target.resource), pods, config, new_config, where)

    def plan(self, state: AllocatableState, params: RestartDpParams) -> list[Change]:
        if state.converged:
            return []
        changes = []
        if state.new_config is not None:
            changes.append(Change("extend-selectors", state.config_ref, _ids_of(state.config),
                                  _ids_of(state.new_config)))
        if not state.plugin_pods:
            raise NotYetKnown(f"no SR-IOV device plugin pod on node {state.node.name}: is sriov-device-plugin "
                              "done and the node in its nodeSelector?", after=PRODUCER)
        return changes + [Change("restart", f"pod/{p.ref}", f"allocatable {state.allocatable}", state.expected)
                          for p in state.plugin_pods]

    def apply(self, ctx: StepContext, params: RestartDpParams, state: AllocatableState, changes: list[Change]) -> None:
        target = target_of(ctx, params)
        if state.new_config is not None and target.plugin is not None:
            _write_config(ctx.surface, target.plugin, state.config, state.new_config)
        for pod in state.plugin_pods:
            ctx.surface.delete_pod(pod.namespace, pod.name)
        self.poll(ctx, params)

    def poll(self, ctx: StepContext, params: RestartDpParams) -> None:
        """The restarted plugin pods registered the node's VFs: allocatable is as expected."""
        last = self.observe(ctx, params)
        if last.new_config is not None:
            raise TransientError(f"the SR-IOV device plugin's ConfigMap changed while node {last.node.name} "
                                 "widened it: another writer raced this one", evidence=self.evidence(last))
        if last.converged:
            return
        resource = target_of(ctx, params).resource
        timeout = StepTimeout(f"node {last.node.name} allocatable {resource} is {last.allocatable}, not "
                              f"{last.expected}, {params.timeout:g}s after restarting its device plugin pod",
                              evidence=self.evidence(last))
        raise NotYet(f"allocatable {resource} is {last.allocatable}, waiting for {last.expected}",
                     delay=params.poll_interval, timeout=params.timeout, expired=timeout)

    def outputs(self, state: AllocatableState, params: RestartDpParams) -> dict[str, Any]:
        return {"allocatable_vfs": state.allocatable}

    def evidence(self, state: AllocatableState) -> str:
        pods = ", ".join(p.ref for p in state.plugin_pods) or "none"
        return (f"node {state.node.name}: allocatable {state.allocatable}, expected {state.expected}; "
                f"plugin pods {pods}\n" + (f"config.json:\n{state.new_config or state.config}" if state.config else ""))


def _write_config(surface: ClusterSurface, plugin: Plugin, live: str | None, config: str) -> None:
    """The one key, by a patch (another installer may own the ConfigMap; its first change by nicflow
    records what it replaces: sriovdp_adopt); nicflow's own DaemonSet also gets the hash of its new
    config, as sriov-device-plugin would write it."""
    surface.patch("v1", "ConfigMap", plugin.config_map, plugin.namespace, config_patch(surface, plugin, live, config))
    if not plugin.adopted:
        for name in plugin.daemonsets:
            surface.patch("apps/v1", "DaemonSet", name, plugin.namespace, {"spec": {"template": {"metadata": {
                "annotations": {CONFIG_HASH: config_hash(config)}}}}})


def _ids_of(config: str | None) -> str | None:
    try:
        parsed = json.loads(config) if config else None
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    return json.dumps([{k: v for k, v in obj.items() if k in dp.ID_SELECTORS}
                       for entry in parsed.get("resourceList") or [] for obj in dp.selector_objects(entry)])
