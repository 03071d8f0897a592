"""Backends lower IR graphs to something that runs: reference (numpy), torch, xla, triton."""
