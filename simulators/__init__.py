"""The simulators' own home: what stands in for a real cluster in the demo, the benchmarks and
the tests. The engine and the steps never import it (an import-linter contract keeps it so)."""
