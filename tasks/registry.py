"""Every step type nicflow ships, for the engine and the pipeline loader."""

from __future__ import annotations

from tasks.cluster import CLUSTER_STEPS
from tasks.cluster.steps_ovsovn import OVS_OVN_STEPS
from tasks.corigine import CORIGINE_STEPS
from tasks.generic import GENERIC_STEPS
from workflows.registry import StepRegistry


def default_registry() -> StepRegistry:
    return StepRegistry([*GENERIC_STEPS, *CORIGINE_STEPS, *CLUSTER_STEPS, *OVS_OVN_STEPS])
