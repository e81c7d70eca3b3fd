"""Benchmarks of the pipeline's stages against raw baselines: development only, not shipped.

Run from a checkout as `python -m bench <command>` (`python -m bench --help` lists them).
Results go under `<RECSYS_DATA_DIR>/bench/` or where `--out` / `--json` say; see
docs/benchmarks.md for the recorded figures.
"""
