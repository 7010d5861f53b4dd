"""The cluster half of the rollout: the cluster surface (Kubernetes API or a
simulated cluster), the cluster steps (device plugin, Multus, the
NetworkAttachmentDefinition, Kube-OVN) and the node lifecycle steps that run
on a controller (cordon and drain, device plugin restart, verification
through exec, uncordon)."""

from __future__ import annotations

from tasks.cluster.steps_allocatable import RestartDevicePlugin
from tasks.cluster.steps_drain import CordonDrain, Uncordon
from tasks.cluster.steps_kubeovn import KubeOvn
from tasks.cluster.steps_multus import Multus, NetworkAttachment
from tasks.cluster.steps_sriovdp import SriovDevicePlugin
from tasks.cluster.steps_sriovdp_restore import RestoreDevicePluginConfig
from tasks.cluster.steps_verify import VerifyOffloadCluster
from workflows.step import Step

CLUSTER_STEPS: list[type[Step]] = [
    SriovDevicePlugin, RestoreDevicePluginConfig, Multus, NetworkAttachment, KubeOvn,
    CordonDrain, RestartDevicePlugin, VerifyOffloadCluster, Uncordon,
]

__all__ = ["CLUSTER_STEPS"]
