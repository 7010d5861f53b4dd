"""The `nicflow reconcile` process: its policy, pipeline and cluster checked before anything starts."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from tasks.cluster.kube import KubeCluster
from tasks.registry import default_registry
from workers.drift import chat_channel
from workers.observability import configure_logging, serve_metrics
from workers.reconciler import Reconciler
from workers.redisconn import redis_client
from workers.settings import get_settings
from workers.targets import pipeline_path
from workflows.errors import PipelineError, RunError, StepError
from workflows.loader import Pipeline, load_file
from workflows.policy import PolicyFile, load_policy
from workflows.process_lease import ProcessLease

log = logging.getLogger("nicflow.reconcile")


def policy_pipeline(policy: PolicyFile) -> Pipeline:
    """The policy's pipeline with its parameters and rollout; a problem names the policy's line."""
    try:
        path = pipeline_path(policy.spec.pipeline)
        plain = load_file(path, default_registry())
    except PipelineError as exc:
        raise policy.problem(("pipeline",), str(exc), policy.spec.pipeline) from None
    policy.check(plain.spec)
    try:
        return load_file(path, default_registry(), overrides=policy.overrides())
    except PipelineError as exc:
        raise PipelineError(f"{policy.source}: parameters: {exc}") from None


def _cluster_and_fleet(sim_root: Path | None) -> tuple[KubeCluster, str]:
    if sim_root is None:
        return KubeCluster.from_environment(), "real"
    from simulators.kube_api.control import kubeconfig_path

    config = kubeconfig_path(sim_root)
    if not config.exists():
        raise RunError(f"--sim-root {str(sim_root)!r}: no simulated API kubeconfig at {config} "
                       "(start `nicflow sim api --sim-root ...` first)")
    return KubeCluster.from_kubeconfig(str(config)), f"sim:{sim_root.resolve()}"


def run_reconciler(policy_file: Path, *, sim_root: Path | None, lease_ttl: float, metrics_port: int) -> None:
    policy = load_policy(policy_file)
    pipeline = policy_pipeline(policy)
    try:
        cluster, fleet = _cluster_and_fleet(sim_root)
    except StepError as exc:
        raise RunError(exc.message) from None
    from workers.runtime import make_engine

    configure_logging()
    engine = make_engine()
    redis = redis_client()
    serve_metrics(metrics_port)
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    reconciler = Reconciler(engine=engine, redis=redis, policy=policy, pipeline=pipeline, cluster=cluster,
                            fleet=fleet,
                            lease=ProcessLease(redis, f"reconcile:{policy.spec.name}", ttl_seconds=lease_ttl),
                            chat=chat_channel(policy.spec.chat_channel),
                            visibility_timeout=get_settings().visibility_timeout)
    log.info("reconciler of policy %s (pipeline %s, nodes %s) ready.", policy.spec.name, policy.spec.pipeline,
             ",".join(f"{k}={v}" for k, v in sorted(policy.spec.selector.items())))
    reconciler.serve(stop)
