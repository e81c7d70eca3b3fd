"""Benchmarks: the stage-by-stage runner (`recsys bench`) and per-stage scripts."""
