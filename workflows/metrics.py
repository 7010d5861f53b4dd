"""Prometheus metrics the engine records; each process serves its own registry."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RUNS_FINISHED = Counter("nicflow_runs_finished_total", "Runs that ended, by final status", ["status"])
STEP_ATTEMPTS = Counter("nicflow_step_attempts_total", "Step attempts by step type and outcome",
                        ["type", "outcome"])
STEP_SECONDS = Histogram("nicflow_step_duration_seconds", "Duration of one step attempt, by step type", ["type"],
                         buckets=(0.005, 0.02, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 180, 600))
STEP_RETRIES = Counter("nicflow_step_retries_total", "Attempts scheduled again after a transient failure",
                       ["type", "kind"])
LEASE_EXPIRIES = Counter("nicflow_lease_expiries_total",
                         "Running steps given to another worker because their heartbeat stopped")
NODES_FINISHED = Counter("nicflow_nodes_finished_total", "Nodes that ended a run, by state", ["state"])
