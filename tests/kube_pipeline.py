"""The corigine-offload pipeline with the cluster and lifecycle steps added, as proposed
for workflows/pipelines/corigine-offload.yaml (the lead integrates the file): built here
from the node pipeline file, so tests follow it as it evolves."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

PIPELINE = Path(__file__).resolve().parents[1] / "workflows" / "pipelines" / "corigine-offload.yaml"

PARAMETERS: dict[str, Any] = {
    "iface": {"type": "str", "default": "", "pattern": r"^[A-Za-z0-9_.,:*+?^|()\[\]-]*$",
              "description": "Kube-OVN IFACE (kube-ovn-cni --iface); empty leaves it as it is."},
    "allow_disable_ovn_lb": {"type": "bool", "default": False,
                             "description": "Nothing here needs Kube-OVN's OVN load balancer: it may be turned off."},
    "kube_ovn_install_url": {"type": "str", "default": "", "pattern": r"^(https?://[A-Za-z0-9.:/_%~+-]+)?$"},
    "kube_ovn_install_sha256": {"type": "str", "default": "", "pattern": "^([0-9a-f]{64})?$"},
    "network_name": {"type": "str", "default": "default", "pattern": "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"},
    "network_namespace": {"type": "str", "default": "default", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
    "drain_timeout": {"type": "float", "default": 300, "min": 1, "max": 7200},
    "traffic_probe": {"type": "bool", "default": False},
    "cluster_poll_interval": {"type": "float", "default": 2, "min": 0.001, "max": 60},
}

CLUSTER_STEPS: list[dict[str, Any]] = [
    {"id": "sriov-device-plugin", "type": "sriov-device-plugin", "timeout": 600,
     "retry": {"attempts": 3, "initial_backoff": 2, "max_backoff": 30},
     "params": {"poll_interval": "${cluster_poll_interval}"}},
    {"id": "multus", "type": "multus", "timeout": 600,
     "retry": {"attempts": 3, "initial_backoff": 2, "max_backoff": 30},
     "params": {"poll_interval": "${cluster_poll_interval}"}},
    {"id": "network-attachment", "type": "network-attachment", "needs": ["multus"], "timeout": 120,
     "params": {"name": "${network_name}", "namespace": "${network_namespace}",
                "poll_interval": "${cluster_poll_interval}"}},
    {"id": "kube-ovn", "type": "kube-ovn", "timeout": 3600, "retry": {"attempts": 2, "initial_backoff": 5,
                                                                       "max_backoff": 30},
     "params": {"iface": "${iface}", "allow_disable_lb": "${allow_disable_ovn_lb}",
                "install_url": "${kube_ovn_install_url}", "install_sha256": "${kube_ovn_install_sha256}",
                "poll_interval": "${cluster_poll_interval}"}},
]

LIFECYCLE: dict[str, dict[str, Any]] = {
    # before the disruptive reload: only when select-firmware changed the firmware link
    "drain": {"id": "drain", "type": "cordon-drain", "timeout": 900,
              "retry": {"attempts": 3, "initial_backoff": 5, "max_backoff": 60},
              "params": {"when_any": ["firmware_changed"], "drain_timeout": "${drain_timeout}",
                         "poll_interval": "${cluster_poll_interval}"}},
    "restart-device-plugin": {"id": "restart-device-plugin", "type": "restart-device-plugin", "timeout": 300,
                              "retry": {"attempts": 3, "initial_backoff": 2, "max_backoff": 20},
                              "params": {"poll_interval": "${cluster_poll_interval}"}},
    "verify-offload-cluster": {"id": "verify-offload-cluster", "type": "verify-offload-cluster", "timeout": 300,
                               "retry": {"attempts": 6, "initial_backoff": 1, "max_backoff": 10},
                               "params": {"min_offloaded_flows": "${min_offloaded_flows}",
                                          "traffic_probe": "${traffic_probe}",
                                          "poll_interval": "${cluster_poll_interval}"}},
    "uncordon": {"id": "uncordon", "type": "uncordon", "timeout": 60},
}


def combined() -> dict[str, Any]:
    """corigine-offload.yaml + the cluster steps + the node lifecycle steps (the file as it is,
    once it has them)."""
    spec = yaml.safe_load(PIPELINE.read_text())
    for name, parameter in PARAMETERS.items():
        spec.setdefault("parameters", {}).setdefault(name, copy.deepcopy(parameter))
    if any(step["type"] in ("cordon-drain", "sriov-device-plugin") for step in spec["steps"]):
        return spec
    steps: list[dict[str, Any]] = copy.deepcopy(CLUSTER_STEPS)
    for step in spec["steps"]:
        if step["id"] == "preflight":
            step["needs"] = ["kube-ovn"]  # node work starts once the cluster side is in place
        if step["id"] == "reload-driver":
            drain = copy.deepcopy(LIFECYCLE["drain"])
            drain["needs"], step["needs"] = list(step.get("needs", [])), ["drain"]
            steps.append(drain)
        if step["id"] == "verify-offload":
            restart = copy.deepcopy(LIFECYCLE["restart-device-plugin"])
            restart["needs"] = [*step.get("needs", []), "sriov-device-plugin"]
            steps.append(restart)
            step["needs"] = ["restart-device-plugin"]
        steps.append(step)
    verify = copy.deepcopy(LIFECYCLE["verify-offload-cluster"])
    verify["needs"] = ["verify-offload", "network-attachment"]
    uncordon = copy.deepcopy(LIFECYCLE["uncordon"])
    uncordon["needs"] = ["verify-offload-cluster"]
    spec["steps"] = [*steps, verify, uncordon]
    return spec


def step_of(spec: dict[str, Any], step_type: str) -> str:
    """The id of the (first) step of a type."""
    return next(step["id"] for step in spec["steps"] if step["type"] == step_type)
