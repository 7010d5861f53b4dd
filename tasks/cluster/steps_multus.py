"""multus and network-attachment: Multus CNI, its CRD, and the Kube-OVN page's
NetworkAttachmentDefinition.

Multus passes the VF the device plugin allocated to Kube-OVN. Its objects are
the project's `multus-daemonset.yml` (thin plugin): the
NetworkAttachmentDefinition CRD, RBAC, a ServiceAccount and the DaemonSet,
with the image pinned by parameter.

The NetworkAttachmentDefinition is exactly the page's: the
`k8s.v1.cni.cncf.io/resourceName` annotation naming the device plugin's
resource, and a kube-ovn CNI config whose `provider` is
`<name>.<namespace>.ovn`. Pods select it with
`v1.multus-cni.io/default-network: <namespace>/<name>`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, field_validator

from tasks.cluster.objects import ApplyObjectsStep, ObjectsParams, ObjectsState, check_image, config_string, live_field
from tasks.cluster.surface import DNS1123_LABEL, DNS1123_SUBDOMAIN, EXTENDED_RESOURCE, ClusterSurface, Manifest

NAD_GROUP = "k8s.cni.cncf.io"
NAD_CRD = f"network-attachment-definitions.{NAD_GROUP}"
RESOURCE_ANNOTATION = "k8s.v1.cni.cncf.io/resourceName"
SOCKET = r"^/([A-Za-z0-9._-]+/)*[A-Za-z0-9._-]+\.sock$"
MULTUS_LABELS = {"tier": "node", "app": "multus", "name": "multus"}


class MultusParams(ObjectsParams):
    namespace: str = Field("kube-system", pattern=DNS1123_LABEL)
    """Where the Multus DaemonSet runs."""
    image: str = "ghcr.io/k8snetworkplumbingwg/multus-cni:v4.1.4"
    """Pinned by tag or digest; `latest` is refused."""

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return check_image(value)


def nad_crd() -> Manifest:
    schema = {"type": "object", "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
        "spec": {"type": "object", "properties": {"config": {"type": "string"}}},
    }}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": NAD_CRD},
        "spec": {
            "group": NAD_GROUP, "scope": "Namespaced",
            "names": {"plural": "network-attachment-definitions", "singular": "network-attachment-definition",
                      "kind": "NetworkAttachmentDefinition", "shortNames": ["net-attach-def"]},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }


def multus_manifests(params: MultusParams) -> list[Manifest]:
    ns = params.namespace
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "multus"},
        "rules": [
            {"apiGroups": [NAD_GROUP], "resources": ["*"], "verbs": ["*"]},
            {"apiGroups": [""], "resources": ["pods", "pods/status"], "verbs": ["get", "update"]},
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "multus"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "multus"},
        "subjects": [{"kind": "ServiceAccount", "name": "multus", "namespace": ns}],
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "multus", "namespace": ns}}
    privileged = {"privileged": True}
    daemonset = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kube-multus-ds", "namespace": ns, "labels": {"tier": "node", "app": "multus"}},
        "spec": {
            "selector": {"matchLabels": {"name": "multus"}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {"metadata": {"labels": dict(MULTUS_LABELS)}, "spec": {
                "hostNetwork": True,
                "tolerations": [{"operator": "Exists", "effect": "NoSchedule"},
                                {"operator": "Exists", "effect": "NoExecute"}],
                "serviceAccountName": "multus",
                "terminationGracePeriodSeconds": 10,
                "initContainers": [{
                    "name": "install-multus-binary", "image": params.image,
                    "command": ["/install_multus", "-d", "/host/opt/cni/bin", "-t", "thin"],
                    "securityContext": privileged,
                    "resources": {"requests": {"cpu": "10m", "memory": "15Mi"}},
                    "volumeMounts": [{"name": "cnibin", "mountPath": "/host/opt/cni/bin",
                                      "mountPropagation": "Bidirectional"}],
                }],
                "containers": [{
                    "name": "kube-multus", "image": params.image, "command": ["/thin_entrypoint"],
                    "args": ["--multus-conf-file=auto", "--multus-autoconfig-dir=/host/etc/cni/net.d",
                             "--cni-conf-dir=/host/etc/cni/net.d"],
                    "securityContext": privileged,
                    "resources": {"requests": {"cpu": "100m", "memory": "50Mi"},
                                  "limits": {"cpu": "100m", "memory": "50Mi"}},
                    "volumeMounts": [{"name": "cni", "mountPath": "/host/etc/cni/net.d"},
                                     {"name": "cnibin", "mountPath": "/host/opt/cni/bin"}],
                }],
                "volumes": [{"name": "cni", "hostPath": {"path": "/etc/cni/net.d"}},
                            {"name": "cnibin", "hostPath": {"path": "/opt/cni/bin"}}],
            }},
        },
    }
    return [nad_crd(), role, binding, account, daemonset]


class Multus(ApplyObjectsStep[MultusParams]):
    """Multus CNI (thin plugin) and the NetworkAttachmentDefinition CRD, rolled out."""

    type_name = "multus"
    params_model = MultusParams
    description = ("Server-side apply Multus and the NetworkAttachmentDefinition CRD; wait until established and "
                   "rolled out.")

    def manifests(self, params: MultusParams, live: ClusterSurface | None = None) -> list[Manifest]:
        return multus_manifests(params)


class NadParams(ObjectsParams):
    name: str = Field("default", pattern=DNS1123_SUBDOMAIN)
    """The NetworkAttachmentDefinition's name."""
    namespace: str = Field("default", pattern=DNS1123_LABEL)
    """The NetworkAttachmentDefinition's namespace."""
    resource: str = Field("corigine.com/agilio_sriov", pattern=EXTENDED_RESOURCE)
    """The device plugin's resource the pods of this network request."""
    cni_version: str = Field("0.3.1", pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    """cniVersion of the network's CNI configuration."""
    server_socket: str = Field("/run/openvswitch/kube-ovn-daemon.sock", pattern=SOCKET)
    """The kube-ovn CNI plugin's server_socket: kube-ovn-cni's socket on the node."""
    portmap: bool = True
    """Chain the portmap plugin (hostPort support), as the page does."""
    rollout_timeout: float = Field(60.0, gt=0, le=3600)
    """Seconds to wait for the NetworkAttachmentDefinition CRD to be established."""


def nad_config(params: NadParams) -> str:
    plugins: list[dict[str, Any]] = [{"type": "kube-ovn", "server_socket": params.server_socket,
                                      "provider": f"{params.name}.{params.namespace}.ovn"}]
    if params.portmap:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    return json.dumps({"cniVersion": params.cni_version, "name": "kube-ovn", "plugins": plugins}, indent=2)


def nad_manifest(params: NadParams, config: str) -> Manifest:
    return {
        "apiVersion": f"{NAD_GROUP}/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": params.name, "namespace": params.namespace,
                     "annotations": {RESOURCE_ANNOTATION: params.resource}},
        "spec": {"config": config},
    }


class NetworkAttachment(ApplyObjectsStep[NadParams]):
    """The NetworkAttachmentDefinition pods select for VF-backed, offloaded networking."""

    type_name = "network-attachment"
    params_model = NadParams
    description = "Server-side apply the kube-ovn NetworkAttachmentDefinition with the device plugin's resource."

    def manifests(self, params: NadParams, live: ClusterSurface | None = None) -> list[Manifest]:
        have = live_field(live, f"{NAD_GROUP}/v1", "NetworkAttachmentDefinition", params.name, params.namespace,
                          "spec", "config")
        return [nad_manifest(params, config_string(nad_config(params), have))]

    def outputs(self, state: ObjectsState, params: NadParams) -> dict[str, Any]:
        return {"network": f"{params.namespace}/{params.name}", "network_resource": params.resource}
