"""Objects of the Prometheus Operator's CRDs, validated against the CRDs' own openAPIV3Schema
(committed under tests/fixtures/prometheus-operator/, see its README): kubernetes-validate
knows only the built-in kinds.

Strict as `kubectl apply --validate=strict` is for a CRD: a field the schema does not declare
is an error (where the schema does not allow arbitrary keys itself), as well as a wrong type,
a missing required field or a value outside an enum.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "prometheus-operator"
CRD_FILES = {"ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
             "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml"}
GROUP = "monitoring.coreos.com"


def is_crd_kind(obj: dict[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).startswith(GROUP + "/")


def _strict(schema: Any) -> Any:
    """No undeclared fields where the schema declares properties and says nothing else."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def _schema(kind: str, version: str) -> dict[str, Any]:
    crd = yaml.safe_load((FIXTURES / CRD_FILES[kind]).read_text())
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            schema = copy.deepcopy(served["schema"]["openAPIV3Schema"])
            # metadata is the API server's ObjectMeta, not the CRD's to describe
            schema["properties"]["metadata"] = {"type": "object"}
            return _strict(schema)
    raise AssertionError(f"{kind}: the CRD serves no version {version}")


def validate_crd_object(obj: dict[str, Any]) -> None:
    group, _, version = obj["apiVersion"].partition("/")
    assert group == GROUP and obj["kind"] in CRD_FILES, f"no CRD schema for {obj['apiVersion']} {obj['kind']}"
    validator = jsonschema.Draft7Validator(_schema(obj["kind"], version))
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        raise AssertionError(f"{obj['kind']} {obj['metadata'].get('name')}: {first.message} at "
                             f"{'.'.join(map(str, first.path))}")
