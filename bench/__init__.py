"""Benchmarks: each scenario is one command (`python -m bench.<name>`), bounded in time and count, loopback only."""
