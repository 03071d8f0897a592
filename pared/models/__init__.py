"""Small reference models used by tests, examples and benchmarks (imported on demand)."""
