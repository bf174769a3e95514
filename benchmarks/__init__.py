"""Benchmarks that drive a real statehoused through the public SDK."""
