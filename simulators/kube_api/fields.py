"""Field ownership and the three patch kinds of the simulated API server.

- Server-side apply (`apply`): each field manager owns a set of field paths
  (the API server's managedFields, fieldsV1); an apply whose value differs at
  a path another manager owns is a conflict, unless forced, which takes the
  path over (k8s.io/apimachinery pkg/util/managedfields, structured-merge-diff
  v4 merge/update.go). Fields the applier owned before and no longer sends are
  removed when nobody else owns them.
- Strategic merge patch (`strategic_merge`): maps merge, `null` deletes, the
  lists whose Go field carries a `patchMergeKey` merge item by item on that key
  (`MERGE_KEYS`), an item `{"$patch": "delete", <key>: ...}` removes one; every
  other list is replaced (k8s.io/apimachinery pkg/util/strategicpatch/patch.go).
- JSON merge patch (`merge_patch`, RFC 7386): maps merge, `null` deletes, lists
  are replaced. Custom resources take only this one.

Any write other than an apply (create, update, patch) gives the writer the
fields whose value it changed and takes them from the other managers, as the
API server's Update operation does.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

Path = tuple[str, ...]
"""A field path in fieldsV1 spelling: `f:spec`, `k:{"name":"x"}` for a keyed list item."""

MERGE_KEYS: dict[str, str] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name",
    "conditions": "type", "hostAliases": "ip",
}
"""The lists of built-in kinds that merge by key: the `patchMergeKey` struct tags of
k8s.io/api core/v1 types.go (v1.34): Container, EnvVar, Volume, VolumeMount, ContainerPort,
LocalObjectReference, PodCondition/NodeCondition, HostAlias. Matched by the field's name."""

NOT_TRACKED = {("f:apiVersion",), ("f:kind",), ("f:status",)}
META_NOT_TRACKED = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                    "managedFields", "deletionTimestamp", "selfLink"}
"""What managedFields never records (fieldmanager's stripMeta); `status` is ignored by an
apply to the main resource of a kind with a status subresource."""


class ApplyConflicts(Exception):
    """Fields another manager owns hold other values: (manager, path) pairs."""

    def __init__(self, conflicts: list[tuple[str, Path]], api_version: str) -> None:
        super().__init__(conflict_message(conflicts, api_version))
        self.conflicts = conflicts


class BadPatch(ValueError):
    """A patch the server refuses (400), naming the field."""


def _item_key(item: dict[str, Any], key: str) -> str:
    return "k:" + json.dumps({key: item[key]}, separators=(",", ":"))


def _keyed(name: str, value: Any, keys: dict[str, str]) -> str | None:
    key = keys.get(name)
    if key and isinstance(value, list) and all(isinstance(i, dict) and key in i for i in value):
        return key
    return None


def leaves(obj: Any, keys: dict[str, str], prefix: Path = ()) -> dict[Path, Any]:
    """Every owned field path of `obj` and its value (maps and keyed lists are walked into)."""
    found: dict[Path, Any] = {}
    if not isinstance(obj, dict):
        return found
    for name, value in obj.items():
        path = (*prefix, f"f:{name}")
        if path in NOT_TRACKED or (prefix == ("f:metadata",) and name in META_NOT_TRACKED):
            continue
        key = _keyed(name, value, keys)
        if isinstance(value, dict) and value:
            found.update(leaves(value, keys, path))
        elif key is not None and value:
            for item in value:
                found.update(leaves(item, keys, (*path, _item_key(item, key))))
        else:
            found[path] = value
    return found


def fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    """A set of paths as the nested fieldsV1 map the API shows in managedFields."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(part, {})
    return tree


def show_path(path: Path) -> str:
    """`.spec.template.spec.containers[name="openvswitch"].env[name="HW_OFFLOAD"].value`."""
    out = ""
    for part in path:
        if part.startswith("f:"):
            out += "." + part[2:]
        else:
            ((key, value),) = json.loads(part[2:]).items()
            out += f"[{key}={json.dumps(value)}]"
    return out


def conflict_message(conflicts: list[tuple[str, Path]], api_version: str) -> str:
    """k8s.io/apimachinery pkg/util/managedfields/internal/conflict.go NewConflictError."""
    if len(conflicts) == 1:
        manager, path = conflicts[0]
        return f"Apply failed with 1 conflict: conflict with {json.dumps(manager)} using {api_version}: " \
               f"{show_path(path)}"
    by_manager: dict[str, list[Path]] = {}
    for manager, path in conflicts:
        by_manager.setdefault(manager, []).append(path)
    lines = []
    for manager in sorted(by_manager):
        lines.append(f"conflicts with {json.dumps(manager)} using {api_version}:")
        lines += [f"- {show_path(p)}" for p in sorted(by_manager[manager])]
    return f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)


def _merge(live: Any, patch: Any, keys: dict[str, str], *, nulls_delete: bool, name: str = "") -> Any:
    if isinstance(patch, dict) and isinstance(live, dict):
        out = dict(live)
        for field, value in patch.items():
            if field.startswith("$"):
                raise BadPatch(f"the patch directive {field!r} is not supported by the simulated API")
            if value is None and nulls_delete:
                out.pop(field, None)
            else:
                out[field] = _merge(live.get(field), value, keys, nulls_delete=nulls_delete, name=field)
        return out
    key = _keyed(name, patch, keys) if isinstance(live, list) else None
    if key is not None and _keyed(name, live, keys):
        out_list = [copy.deepcopy(i) for i in live]
        for item in patch:
            index = next((n for n, have in enumerate(out_list) if have[key] == item[key]), None)
            if item.get("$patch") == "delete":
                if index is not None:
                    out_list.pop(index)
            elif index is None:
                out_list.append(_merge({}, item, keys, nulls_delete=nulls_delete))
            else:
                out_list[index] = _merge(out_list[index], item, keys, nulls_delete=nulls_delete)
        return out_list
    if isinstance(patch, dict):
        return _merge({}, patch, keys, nulls_delete=nulls_delete)
    return copy.deepcopy(patch)


def strategic_merge(live: dict[str, Any], patch: dict[str, Any], keys: dict[str, str] = MERGE_KEYS) -> dict[str, Any]:
    return _merge(live, patch, keys, nulls_delete=True)


def merge_patch(live: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    return _merge(live, patch, {}, nulls_delete=True)


def _value_at(obj: Any, path: Path) -> tuple[bool, Any]:
    node = obj
    for part in path:
        if isinstance(node, dict) and part.startswith("f:") and part[2:] in node:
            node = node[part[2:]]
        elif isinstance(node, list) and part.startswith("k:"):
            ((key, value),) = json.loads(part[2:]).items()
            found = [i for i in node if isinstance(i, dict) and i.get(key) == value]
            if not found:
                return False, None
            node = found[0]
        else:
            return False, None
    return True, node


def _remove_at(obj: Any, path: Path) -> None:
    present, parent = _value_at(obj, path[:-1])
    last = path[-1]
    if not present:
        return
    if isinstance(parent, dict) and last.startswith("f:"):
        parent.pop(last[2:], None)
    elif isinstance(parent, list) and last.startswith("k:"):
        ((key, value),) = json.loads(last[2:]).items()
        parent[:] = [i for i in parent if not (isinstance(i, dict) and i.get(key) == value)]


Managed = dict[str, dict[str, Any]]
"""manager -> {"operation": "Apply" | "Update", "paths": set of Path}."""


def apply(live: dict[str, Any] | None, applied: dict[str, Any], manager: str, managed: Managed, *,
          force: bool, keys: dict[str, str]) -> dict[str, Any]:
    """The object after `manager` applies `applied`; `managed` is updated in place."""
    sent = leaves(applied, keys)
    base = live or {}
    conflicts = []
    for other, entry in sorted(managed.items()):
        if other == manager:
            continue
        for path in sorted(entry["paths"] & sent.keys()):
            if _value_at(base, path) != (True, sent[path]):
                conflicts.append((other, path))
    if conflicts and not force:
        raise ApplyConflicts(conflicts, applied.get("apiVersion", ""))
    for other, path in conflicts:
        managed[other]["paths"].discard(path)
    merged = copy.deepcopy(base)
    before = managed.get(manager, {}).get("paths", set())
    held_by_others = set().union(*(e["paths"] for m, e in managed.items() if m != manager))
    for path in sorted(before - sent.keys() - held_by_others, key=len, reverse=True):
        _remove_at(merged, path)
    merged = _merge(merged, applied, keys, nulls_delete=False)
    managed[manager] = {"operation": "Apply", "paths": set(sent)}
    return merged


def record_update(before: dict[str, Any] | None, after: dict[str, Any], manager: str, managed: Managed, *,
                  keys: dict[str, str]) -> None:
    """An Update by `manager`: it owns what it changed; the others lose it."""
    old = leaves(before or {}, keys)
    changed = {p for p, v in leaves(after, keys).items() if p not in old or old[p] != v}
    if not changed:
        return
    for other, entry in managed.items():
        if other != manager:
            entry["paths"] -= changed
    entry = managed.setdefault(manager, {"operation": "Update", "paths": set()})
    entry["paths"] |= changed


def managed_fields(managed: Managed, api_version: str, stamp: str) -> list[dict[str, Any]]:
    return [{"manager": manager, "operation": entry["operation"], "apiVersion": api_version, "time": stamp,
             "fieldsType": "FieldsV1", "fieldsV1": fields_v1(entry["paths"])}
            for manager, entry in sorted(managed.items()) if entry["paths"]]
