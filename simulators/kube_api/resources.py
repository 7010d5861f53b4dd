"""Which object a request path names, and where the store keeps it.

Paths are the API server's: `/api/v1/[namespaces/<ns>/]<plural>[/<name>[/<subresource>]]`
and `/apis/<group>/<version>/...` the same. Any plural is accepted, so a new kind
(Events, PodDisruptionBudgets, ...) is stored without code for it; its kind is
known from the table below or learned from the first object created under it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS: dict[str, str] = {
    "nodes": "Node", "pods": "Pod", "configmaps": "ConfigMap", "serviceaccounts": "ServiceAccount",
    "events": "Event", "namespaces": "Namespace", "secrets": "Secret", "services": "Service",
    "daemonsets": "DaemonSet", "deployments": "Deployment", "replicasets": "ReplicaSet",
    "customresourcedefinitions": "CustomResourceDefinition", "clusterroles": "ClusterRole",
    "clusterrolebindings": "ClusterRoleBinding", "roles": "Role", "rolebindings": "RoleBinding",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "network-attachment-definitions": "NetworkAttachmentDefinition",
}
BUILT_IN_GROUPS = {"", "apps", "policy", "rbac.authorization.k8s.io", "apiextensions.k8s.io", "events.k8s.io",
                   "coordination.k8s.io"}
"""Groups served by kube-apiserver itself; others are custom resources (merge patch only,
every list atomic)."""
SEGMENT = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class BadPath(ValueError):
    pass


@dataclass(frozen=True)
class Ref:
    group: str
    version: str
    plural: str
    namespace: str
    name: str
    subresource: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def built_in(self) -> bool:
        return self.group in BUILT_IN_GROUPS

    def kind(self, learned: dict[str, str]) -> str:
        return KINDS.get(self.plural) or learned.get(f"{self.api_version}/{self.plural}", "")

    def with_name(self, name: str) -> Ref:
        return Ref(self.group, self.version, self.plural, self.namespace, name)


def parse(path: str) -> Ref:
    """A request path; BadPath when it is not one the API serves."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise BadPath(path)
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not 1 <= len(rest) <= 3 or not all(SEGMENT.match(p) for p in rest + ([namespace] if namespace else [])):
        raise BadPath(path)
    return Ref(group, version, rest[0], namespace, rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else "")
