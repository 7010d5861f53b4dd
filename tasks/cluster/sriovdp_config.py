"""The SR-IOV network device plugin's config.json, read the way the plugin reads it.

One set of rules for both sides: the steps use it to know which VFs the plugin
will register (and to extend its selectors to a card it misses), the
simulated cluster uses it to register exactly those VFs from a host's sysfs.

From k8snetworkplumbingwg/sriov-network-device-plugin v3.7.0 (the same rules
in v3.4.0, the image the k8s-v1.16 manifest runs, except that a list of
selector objects needs v3.6.0):
- pkg/types/types.go ResourceConfig: `resourceList` entries with
  `resourcePrefix` (optional), `resourceName`, `deviceType` (default
  netDevice), `selectors` (an object, or from v3.6.0 a list of objects);
- cmd/sriovdp/main.go: the prefix defaults to `--resource-prefix`, itself
  `intel.com`; the config is read once at start from /etc/pcidp/config.json;
- pkg/netdevice/netDeviceProvider.go GetFilteredDevices: every selector that
  is given must match (`vendors`, `devices`, `drivers`, `pciAddresses`,
  `rootDevices`, ...); an empty or absent list does not filter
  (pkg/factory/factory.go FilterBySelector); values compare exactly
  (pkg/resources/deviceSelectors.go contains), so ids are lowercase hex;
- cmd/sriovdp/manager.go initServers/excludeAllocatedDevices: a device taken
  by an earlier entry is not added to a later one; an entry with no device
  creates no resource server; validConfigs: resourceName must match
  ^[a-zA-Z0-9_-]+$ and resource names must be unique, else the plugin exits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_PREFIX = "intel.com"
CONFIG_KEY = "config.json"
CONFIG_DIR = "/etc/pcidp"
"""Where the plugin's DaemonSet mounts its ConfigMap (default --config-file /etc/pcidp/config.json)."""
VF_DRIVER = "nfp_netvf"
AGILIO_VENDORS = ("19ee", "1da8")
"""Netronome and Corigine (PCI_VENDOR_ID_NETRONOME, PCI_VENDOR_ID_CORIGINE)."""
VF_OF_PF = {"3800": "3803", "4000": "6003", "5000": "6003", "6000": "6003"}
"""The VF id each PF presents. Linux drivers/net/ethernet/netronome/nfp/nfp_main.c binds PFs
3800 (NFP_DEV_NFP3800) and 4000/5000/6000 (NFP_DEV_NFP6000); nfp_netvf_main.c
nfp_netvf_pci_device_ids binds their VFs, PCI_DEVICE_ID_NFP3800_VF (3803) and
PCI_DEVICE_ID_NFP6000_VF (6003), under both vendors."""
VF_DEVICES = ("3803", "6003")
NFD_LABEL = "feature.node.kubernetes.io/pci-{vendor}.present"
"""Node Feature Discovery's PCI feature label (its default deviceLabelFields: vendor)."""
ID_SELECTORS = ("vendors", "devices", "drivers")
LIST_SELECTORS = (*ID_SELECTORS, "pciAddresses", "rootDevices", "pfNames", "linkTypes", "ddpProfiles", "pKeys",
                  "acpiIndexes", "auxTypes")
RESOURCE_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")


class ConfigError(ValueError):
    """config.json the plugin would refuse (it exits, registering nothing)."""


@dataclass(frozen=True)
class Device:
    """A PCI function as the plugin sees it."""

    vendor: str
    device: str
    driver: str | None
    pci_address: str | None = None
    """None when not known (a card's VFs seen through facts only)."""
    pf_address: str | None = None


def entries(config: str) -> list[dict[str, Any]]:
    """The resourceList, validated like the plugin's readConfig and validConfigs."""
    try:
        parsed = json.loads(config)
    except ValueError as exc:
        raise ConfigError(f"config.json is not JSON: {exc}") from None
    found = parsed.get("resourceList") if isinstance(parsed, dict) else None
    if not isinstance(found, list) or not all(isinstance(e, dict) for e in found):
        raise ConfigError("config.json has no resourceList of objects")
    seen: set[str] = set()
    for entry in found:
        name = entry.get("resourceName")
        if not isinstance(name, str) or not RESOURCE_NAME.fullmatch(name):
            raise ConfigError(f"resourceName {name!r} contains invalid characters")
        if resource_of(entry) in seen:
            raise ConfigError(f"resource name {resource_of(entry)!r} already exists")
        seen.add(resource_of(entry))
        _check_lists(entry)
    return found


def _check_lists(entry: dict[str, Any]) -> None:
    """Selector lists decode into Go []string: anything else fails json.Unmarshal."""
    selectors = entry.get("selectors")
    for obj in selectors if isinstance(selectors, list) else [selectors] if selectors is not None else []:
        if not isinstance(obj, dict):
            raise ConfigError(f"selectors of {entry.get('resourceName')} must be objects")
        for key, value in obj.items():
            if key in LIST_SELECTORS and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"{key} of {entry.get('resourceName')} must be a list of strings, not {value!r}")


def resource_of(entry: dict[str, Any]) -> str:
    return f"{entry.get('resourcePrefix') or DEFAULT_PREFIX}/{entry.get('resourceName')}"


def entry_for(config: str, resource: str) -> dict[str, Any] | None:
    return next((e for e in entries(config) if resource_of(e) == resource), None)


def selector_objects(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """`selectors` as a list (an object is one); netDevice entries only."""
    if (entry.get("deviceType") or "netDevice") != "netDevice":
        return []
    selectors = entry.get("selectors")
    if isinstance(selectors, dict):
        return [selectors]
    if isinstance(selectors, list):
        return [s for s in selectors if isinstance(s, dict)]
    return [{}]  # no selectors: nothing filters


def _in_range(index: int, spec: str) -> bool:
    """`<addr>#0-3,5`: VF indexes (isSelected in deviceSelectors.go)."""
    for part in spec.split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (high or low).isdigit() and int(low) <= index <= int(high or low):
            return True
    return False


def selected(selectors: dict[str, Any], device: Device, vf_index: int | None = None) -> bool:
    """Whether one selector object takes the device. Selectors nicflow does not emulate
    (pfNames, linkTypes, ddpProfiles, isRdma, vdpaType, pKeys, acpiIndexes, ...) select
    nothing here: an nfp VF has no RDMA, DDP, vDPA or ACPI index, and a PF name needs the
    eswitch mode the plugin reads from devlink."""
    values = {"vendors": device.vendor, "devices": device.device, "drivers": device.driver}
    for key, value in selectors.items():
        if key in values:
            if value and values[key] not in value:
                return False
        elif key == "pciAddresses":
            if value and device.pci_address not in value:
                return False
        elif key == "rootDevices":
            if value and not any(_root_matches(item, device, vf_index) for item in value):
                return False
        elif key.lower() == "needvhostnet":
            continue  # adds /dev/vhost-net to the pod: not a filter
        elif value:
            return False
    return True


def _root_matches(item: str, device: Device, vf_index: int | None) -> bool:
    address, _, indexes = str(item).partition("#")
    if device.pf_address is None or address.lower() != device.pf_address:
        return False
    return not indexes or (vf_index is not None and _in_range(vf_index, indexes))


def pool_sizes(config: str, devices: Sequence[tuple[Device, int | None]]) -> dict[str, int]:
    """Devices each resource registers: entries in order, a device in the first pool
    that selects it (excludeAllocatedDevices)."""
    taken: set[int] = set()
    sizes: dict[str, int] = {}
    for entry in entries(config):
        count = 0
        for selectors in selector_objects(entry):
            for n, (device, vf_index) in enumerate(devices):
                if n not in taken and selected(selectors, device, vf_index):
                    taken.add(n)
                    count += 1
        sizes[resource_of(entry)] = count
    return sizes


def covers(entry: dict[str, Any], vendor: str, device: str, driver: str = VF_DRIVER) -> bool:
    """Some selector object of the entry takes a VF with these ids (by ids alone)."""
    probe = Device(vendor, device, driver)
    return any(selected(s, probe) for s in selector_objects(entry))


def extended(config: str, resource: str, vendor: str, device: str, driver: str = VF_DRIVER) -> str:
    """config.json with the resource's first selector object widened to these ids, or
    ConfigError when widening cannot make it select them (other selectors restrict it)."""
    parsed = json.loads(config)
    entry = next((e for e in parsed["resourceList"] if resource_of(e) == resource), None)
    if entry is None:
        raise ConfigError(f"config.json has no entry for {resource}")
    objects = selector_objects(entry)
    if not objects:
        raise ConfigError(f"the entry for {resource} is not a netDevice entry")
    first = objects[0]
    for key, value in zip(ID_SELECTORS, (vendor, device, driver), strict=True):
        if first.get(key) and value not in first[key]:
            first[key] = sorted({*first[key], value})
    if isinstance(entry.get("selectors"), list):
        entry["selectors"][0] = first
    else:
        entry["selectors"] = first
    if not covers(entry, vendor, device, driver):
        keys = sorted(k for k, v in first.items() if v and k not in ID_SELECTORS)
        raise ConfigError(f"the selectors of {resource} restrict by {', '.join(keys)}: nicflow does not widen those")
    return json.dumps(parsed, indent=2) + "\n"


def union(values: Iterable[str], more: Iterable[str]) -> list[str]:
    return sorted({*values, *more})
