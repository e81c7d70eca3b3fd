"""`python -m bench <command> [options]`: the benchmarks' one command line.

Each command runs one benchmark module as if it were started with `python -m bench.<module>`,
so `python -m bench <command> --help` shows that benchmark's own options.
"""

from __future__ import annotations

import argparse
import runpy
import sys

# command -> (module, what it measures)
COMMANDS = {
    "run": ("bench.runner",
            "every pipeline stage beside its raw baseline at --size small|medium|large"),
    "validation": ("bench.validation",
                   "the validate stage against a bare DuckDB COPY of the batch"),
    "features": ("bench.feature_build", "the feature build against bare DuckDB COPY"),
    "features-quality": ("bench.features_quality",
                         "offline metrics by recency decay and holdout split"),
    "training": ("bench.als_training",
                 "ALS fit/recommend/explain against bare implicit; the ML100k search table"),
    "publish": ("bench.publish", "publishing against bare insert_many of the same documents"),
    "serving-load": ("bench.serving_load", "user recommendations under wrk against /health"),
    "dask-scaling": ("bench.dask_scaling",
                     "the pipeline on the local runner against the Dask runner, per stage"),
    "partitioned-scoring": ("bench.partitioned_scoring",
                            "all-users scoring in W hash partitions (scale-out simulation)"),
    "gpu-scoring": ("bench.gpu_scoring", "all-users top-N on the CPU against the torch path"),
}


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark that `argv[0]` names with the rest of `argv` as its arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of the pipeline's stages against raw baselines (development "
                    "only: run from a checkout).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<21} {what}"
                                         for name, (_, what) in COMMANDS.items()))
    parser.add_argument("command", choices=COMMANDS, metavar="command")
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        help="the command's own options (see `<command> --help`)")
    args = parser.parse_args(argv)
    module = COMMANDS[args.command][0]
    saved = sys.argv
    sys.argv = [f"python -m bench {args.command}", *args.args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
