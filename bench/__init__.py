"""Benchmarks: printed figures and ratios measured in one run, never timed assertions."""
