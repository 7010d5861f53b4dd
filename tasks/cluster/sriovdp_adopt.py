"""Which SR-IOV device plugin serves the cluster: one already there, or nicflow's own.

Clusters that followed the Kube-OVN Corigine page run the plugin project's
deployments/k8s-v1.16/sriovdp-daemonset.yaml (sriov-network-device-plugin
v3.5.1 and before: DaemonSets `kube-sriov-device-plugin-<arch>`; v3.6.0 on,
deployments/sriovdp-daemonset.yaml: `kube-sriov-device-plugin`), labelled
`app: sriovdp` (pods also `name: sriov-device-plugin`), reading the ConfigMap
mounted at /etc/pcidp. A second plugin registering the same resource would
fight the first over the node's allocatable, so such a plugin is adopted:
found by those labels, or by its ConfigMap naming the resource.
nicflow's own DaemonSet carries the config-hash annotation in its template.

The first time nicflow changes an adopted plugin's config.json it records the
text it found in the ConfigMap's annotation `nicflow.io/original-config`, in
the same patch (as the kube-ovn step records ovs-ovn's updateStrategy on the
DaemonSet): the rollback (restore-device-plugin-config) puts it back from
there, whichever run or controller widened it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.cluster import sriovdp_config as dp
from tasks.cluster.surface import ClusterSurface, Manifest, check_labels, check_name

UPSTREAM_LABELS = ({"app": "sriovdp"}, {"name": "sriov-device-plugin"})
CONFIG_HASH = "nicflow.io/config-hash"
ORIGINAL_CONFIG = "nicflow.io/original-config"


@dataclass(frozen=True)
class Plugin:
    """The device plugin that serves the resource, and where its configuration lives."""

    namespace: str
    daemonsets: tuple[str, ...]
    """All DaemonSets reading this ConfigMap (the k8s-v1.16 manifest has one per architecture)."""
    config_map: str
    config_key: str
    pod_selector: dict[str, str]
    config: str | None
    """The live config.json text; None when the ConfigMap or key is absent."""
    adopted: bool

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.daemonsets[0]}"

    def as_fact(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "daemonsets": list(self.daemonsets), "config_map": self.config_map,
                "config_key": self.config_key, "pod_selector": dict(self.pod_selector), "adopted": self.adopted}

    @classmethod
    def of_fact(cls, fact: Any) -> Plugin | None:
        """From the sriov-device-plugin step's `device_plugin` output, checked again: it reaches API paths."""
        if not isinstance(fact, dict):
            return None
        namespace = check_name(fact.get("namespace"), "fact device_plugin.namespace")
        names = tuple(check_name(n, "fact device_plugin.daemonsets") for n in fact.get("daemonsets") or [])
        selector = fact.get("pod_selector")
        if not names or not isinstance(selector, dict) or not selector:
            return None
        return cls(namespace, names, check_name(fact.get("config_map"), "fact device_plugin.config_map"),
                   check_name(fact.get("config_key"), "fact device_plugin.config_key",
                              pattern=r"^[-._a-zA-Z0-9]{1,253}$"),
                   check_labels(selector, "fact device_plugin.pod_selector"), None, bool(fact.get("adopted")))


def _template(ds: Manifest) -> dict[str, Any]:
    return ((ds.get("spec") or {}).get("template") or {})


def mounted_config(ds: Manifest) -> tuple[str, str] | None:
    """(ConfigMap, key) a DaemonSet's plugin container reads as /etc/pcidp/config.json."""
    spec = _template(ds).get("spec") or {}
    volumes = {v.get("name"): v.get("configMap") for v in spec.get("volumes") or [] if v.get("configMap")}
    for container in spec.get("containers") or []:
        for mount in container.get("volumeMounts") or []:
            source = volumes.get(mount.get("name"))
            if source and mount.get("mountPath", "").rstrip("/") == dp.CONFIG_DIR and source.get("name"):
                items = source.get("items") or [{"key": dp.CONFIG_KEY, "path": dp.CONFIG_KEY}]
                key = next((i.get("key") for i in items if i.get("path") == dp.CONFIG_KEY), None)
                if key:
                    return str(source["name"]), str(key)
    return None


def is_own(ds: Manifest) -> bool:
    return CONFIG_HASH in ((_template(ds).get("metadata") or {}).get("annotations") or {})


def _labelled(ds: Manifest) -> bool:
    labels = {**((_template(ds).get("metadata") or {}).get("labels") or {}),
              **((ds.get("metadata") or {}).get("labels") or {})}
    return any(all(labels.get(k) == v for k, v in wanted.items()) for wanted in UPSTREAM_LABELS)


def _serves(config: str | None, resource: str) -> bool:
    if config is None:
        return False
    try:
        return dp.entry_for(config, resource) is not None
    except dp.ConfigError:
        return False


def find_existing(surface: ClusterSurface, namespace: str, resource: str) -> Plugin | None:
    """A device plugin another installer runs in `namespace`: one whose ConfigMap names
    `resource` first, else one with the upstream manifest's labels; by name among equals."""
    found: list[tuple[bool, str, Manifest, str, str, str | None]] = []
    for ds in surface.list_daemonsets(namespace):
        mounted = mounted_config(ds)
        if is_own(ds) or mounted is None:
            continue
        data = surface.get_config_map(namespace, mounted[0])
        config = None if data is None else data.get(mounted[1])
        if _serves(config, resource) or _labelled(ds):
            found.append((not _serves(config, resource), ds["metadata"]["name"], ds, *mounted, config))
    if not found:
        return None
    _rank, _name, chosen, config_map, key, config = min(found, key=lambda f: (f[0], f[1]))
    sharing = tuple(f[1] for f in sorted(found, key=lambda f: (f[0], f[1])) if f[3] == config_map)
    selector = dict(((chosen.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
    return Plugin(namespace, sharing, config_map, key, selector, config, adopted=True)


def recorded_config(surface: ClusterSurface, plugin: Plugin) -> str | None:
    """The config.json text the plugin's ConfigMap held before nicflow first changed it, if it did."""
    found = surface.get("v1", "ConfigMap", plugin.config_map, plugin.namespace)
    value = (((found or {}).get("metadata") or {}).get("annotations") or {}).get(ORIGINAL_CONFIG)
    return value if isinstance(value, str) else None


def config_patch(surface: ClusterSurface, plugin: Plugin, live: str | None, new: str) -> Manifest:
    """The patch of the one key; for an adopted plugin, the first change also records what it replaces."""
    body: Manifest = {"data": {plugin.config_key: new}}
    if plugin.adopted and live is not None and recorded_config(surface, plugin) is None:
        body["metadata"] = {"annotations": {ORIGINAL_CONFIG: live}}
    return body
