"""Comparing runs: reports, statistics and the benchmark."""
