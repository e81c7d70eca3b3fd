"""Offline ranking metrics by the interactions view's recency decay and by holdout split.

Ingests a batch with the validate stage (into a temporary raw store), builds one feature snapshot
per half-life from it as the features stage does, and trains/evaluates ALS exactly as the
pipeline's train stage does (same settings and seed), once per holdout split
(`RECSYS_HOLDOUT_SPLIT`: per-user random, or per user by time),
printing one row of ALS and most-popular metrics per (half-life, split).

    python -m bench features-quality DIR --half-lives 0 365 180 90
    python -m bench features-quality DIR --half-lives 0 --splits random time
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from features.stage import build_features_as_of
from ingest.stage import ingest_batch
from recsys.settings import load_settings
from training.data import load_interactions
from training.evaluate import train_and_evaluate
from training.stage import params_from_settings


def main(argv: list[str] | None = None) -> None:
    """Print one JSON line of ALS and most-popular metrics per (half-life, split)."""
    parser = argparse.ArgumentParser(prog="python -m bench features-quality",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("input_dir", type=Path, help="batch directory (e.g. imported ML100k)")
    parser.add_argument("--half-lives", type=float, nargs="+", default=[0.0, 365.0, 90.0])
    parser.add_argument("--splits", nargs="+", choices=("random", "time"), default=["random"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ingest_batch(args.input_dir, run_id="quality",
                     settings=load_settings(data_dir=Path(tmp)))
        for run, half_life in enumerate(args.half_lives):
            settings = load_settings(data_dir=Path(tmp), feature_half_life_days=half_life)
            manifest = build_features_as_of(None, snapshot_id=f"run{run}-hl{half_life:g}",
                                            settings=settings)
            data = load_interactions(manifest.view_path("interactions"),
                                     with_last_ts="time" in args.splits)
            for split in args.splits:
                result = train_and_evaluate(data, params_from_settings(settings),
                                            k=settings.eval_k,
                                            holdout_fraction=settings.holdout_fraction,
                                            split=split)
                print(json.dumps({"half_life_days": half_life, "split": split, **{
                    model: {k: round(v, 4) for k, v in result.metrics[model].items()}
                    for model in ("als", "popular")}}), flush=True)


if __name__ == "__main__":
    main()
