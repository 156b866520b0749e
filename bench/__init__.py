"""Benchmarks and the fault-injection run (each script prints figures; none is a test)."""
