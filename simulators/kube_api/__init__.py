"""A simulated Kubernetes API server process, with the emulated controllers beside its store.

Start it with `nicflow sim api --sim-root DIR`; it writes `DIR/_cluster/kubeconfig` once
listening, and nicflow reaches it through the official `kubernetes` client like any cluster.
"""

from simulators.kube_api.control import ApiProcess, running_api, start_api

__all__ = ["ApiProcess", "running_api", "start_api"]
