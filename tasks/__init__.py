"""The steps and the surfaces they act on (hosts, the cluster)."""
