"""Reading a request: selectors, the field manager, and its line in the request log.

The log (`<sim-root>/_cluster/ops.log`) has one JSON line per API request:
`op`, `write` (true for anything that would change a real API server, whether
or not it changed anything), `kind`, `namespace`, `name`, `method`, `path`,
`query`, `latency` (seconds of injected API latency), `fault` (the status an
injected fault answered) and, for writes (refused ones too), what was sent. A line is written
before the request is carried out, so the emulated controllers' own lines
(`ovs-ovn-start`, ..., `write: false`) follow the request that caused them.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from simulators.kube_api.resources import Ref
from simulators.kube_api.store import ApiError, Manifest

APPLY = "application/apply-patch+yaml"


def label_selector(text: str) -> list[tuple[str, str, str]]:
    """`k=v`, `k==v`, `k!=v`, `k`, `!k` (k8s.io/apimachinery pkg/labels/selector.go Parse); set-based
    terms are refused by name, not silently ignored."""
    terms = []
    for term in (t.strip() for t in text.split(",") if t.strip()):
        if " in " in term or " notin " in term or "(" in term:
            raise ApiError(400, f"labelSelector term {term!r}: set-based requirements are not served by the "
                                "simulated API")
        if "!=" in term:
            key, value = term.split("!=", 1)
            terms.append((key.strip(), "!=", value.strip()))
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            terms.append((key.strip(), "=", value.strip()))
        elif term.startswith("!"):
            terms.append((term[1:].strip(), "!", ""))
        else:
            terms.append((term, "exists", ""))
    return terms


FIELDS = {"spec.nodeName": ("spec", "nodeName"), "metadata.name": ("metadata", "name"),
          "metadata.namespace": ("metadata", "namespace"), "status.phase": ("status", "phase")}


def field_selector(text: str) -> list[tuple[tuple[str, str], str, str]]:
    """The fields pods select on here; any other is refused as the API server refuses it
    (pkg/apis/core/v1/conversion.go: "field label not supported: %s")."""
    terms = []
    for term in (t.strip() for t in text.split(",") if t.strip()):
        negate = "!=" in term
        key, value = term.split("!=" if negate else "=", 1) if ("=" in term) else (term, "")
        key, value = key.strip().rstrip("="), value.strip().lstrip("=")
        if key not in FIELDS:
            raise ApiError(400, f"field label not supported: {key}")
        terms.append((FIELDS[key], "!=" if negate else "=", value))
    return terms


def selects(obj: Manifest, labels: list[tuple[str, str, str]], fields: list[tuple[tuple[str, str], str, str]]) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    for key, op, value in labels:
        if (op == "=" and have.get(key) != value) or (op == "!=" and have.get(key) == value) \
                or (op == "exists" and key not in have) or (op == "!" and key in have):
            return False
    for (section, field), op, value in fields:
        actual = str((obj.get(section) or {}).get(field) or "")
        if (actual == value) != (op == "="):
            return False
    return True


def field_manager(query: dict[str, list[str]], user_agent: str, content_type: str) -> str:
    """The fieldManager parameter; without it an apply is refused
    (k8s.io/apimachinery pkg/apis/meta/v1/validation ValidatePatchOptions) and any other write is
    the client's User-Agent up to its first `/` (k8s.io/apiserver pkg/endpoints/handlers
    prefixFromUserAgent)."""
    manager = (query.get("fieldManager") or [""])[0]
    if manager:
        return manager
    if content_type == APPLY:
        raise ApiError(422, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required '
                            "for apply patch")
    return user_agent.split("/", 1)[0] or "unknown"


def op_name(method: str, ref: Ref, kind: str, content_type: str, watch: bool) -> tuple[str, bool]:
    """The request's `op` and whether a real API server would take it as a write."""
    if ref.subresource == "eviction":
        return "evict", True
    if ref.subresource == "exec":
        return "exec", False
    if method == "GET":
        return ("watch" if watch else "get" if ref.name else "list"), False
    if method == "PATCH":
        if content_type == APPLY:
            return "apply", True
        if kind == "Node":
            return ("patch-node-status" if ref.subresource == "status" else "patch-node"), True
        return "patch", True
    if method == "DELETE":
        return ("delete-pod" if kind == "Pod" else "delete"), True
    return ("create" if method == "POST" else "update"), True


def details(op: str, query: dict[str, list[str]], body: Any, manager: str) -> dict[str, Any]:
    """What a write sent, in the log (a node patch spelled as the cluster surface sends it)."""
    if op == "apply":
        return {"force": (query.get("force") or ["false"])[0] == "true", "manager": manager, "body": body}
    if op == "patch-node" and isinstance(body, dict):
        meta = body.get("metadata") or {}
        return {"unschedulable": (body.get("spec") or {}).get("unschedulable"), "labels": meta.get("labels") or {},
                "annotations": meta.get("annotations") or {}, "body": body}
    return {"body": body} if body is not None else {}


class RequestLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(path, "a", buffering=1)  # noqa: SIM115 - kept open for the server's life
        self._lock = threading.Lock()

    def write(self, entry: dict[str, Any]) -> None:
        line = json.dumps({"ts": round(time.time(), 6), **entry}, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            self._handle.write(line)

    def close(self) -> None:
        self._handle.close()
