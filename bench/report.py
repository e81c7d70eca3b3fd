"""The benchmark runner's results: per-stage ratios against issue 14's targets, the end-to-end
figure, the markdown table."""

from __future__ import annotations

from statistics import median
from typing import Any

from bench.workspace import PIPELINE_STAGES, STAGES

BASELINE_NAMES = {
    "validation": "DuckDB COPY (SELECT * FROM <batch file>) TO parquet",
    "features": "DuckDB COPY of the view SQL",
    "training": "implicit fit + recommend(all users)",
    "publish": "insert_many of the same documents",
    "serving": "the same server's /health under wrk",
}
# Issue 14's targets: ours / baseline at most this (time), per pipeline stage and end to end.
TARGETS = {"validation": 2.0, "features": 1.3, "training": 1.2, "publish": 1.1}
END_TO_END_TARGET = 1.2  # the sum of our pipeline stages / the sum of their baselines
# Serving is a throughput ratio (ours / baseline req/s), at least this (cache on, 1 worker).
SERVING_TARGET = 0.7


def round_floats(value: Any) -> Any:
    """`value` with every float rounded to 3 decimals, through dicts and lists."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: round_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [round_floats(v) for v in value]
    return value


def _pair_ratios(ours: dict[str, Any], base: dict[str, Any], key: str) -> list[float]:
    """With `--repeat`: each pair's `ours[key] / base[key]`, in the order they ran.

    Pairs ran back to back, so a drift in the machine's speed hits both sides of a pair alike;
    the median of the pairs' ratios is the stage's ratio. Empty without repeats.
    """
    ours_runs, base_runs = ours.get("repeats", []), base.get("repeats", [])
    if len(ours_runs) < 2 or len(ours_runs) != len(base_runs):
        return []
    return [o[key] / b[key] for o, b in zip(ours_runs, base_runs, strict=True)]


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Per-stage ratios, each against its target, and the end-to-end figure.

    Args:
        results: the run's results; only `results["phases"]` is read.

    Returns:
        ``{"stages": {stage: row}}`` for every stage with both sides measured, each row with
        its `ratio` (serving: `throughput_ratio`), `target` and `met`, plus ``"end_to_end"``
        when every pipeline stage is there (serving, a throughput ratio, is reported apart).
    """
    phases = results["phases"]
    stages: dict[str, Any] = {}
    for stage in STAGES:
        ours, base = phases.get(f"{stage}/ours"), phases.get(f"{stage}/baseline")
        if not (ours and base):
            continue
        row = {"ours_seconds": ours["seconds"], "baseline_seconds": base["seconds"],
               "ours_peak_rss_mib": ours["peak_rss_mib"],
               "baseline_peak_rss_mib": base["peak_rss_mib"], "baseline": BASELINE_NAMES[stage]}
        if stage == "serving":
            row["ours_rps"], row["baseline_rps"] = ours["rps"], base["rps"]
            row["throughput_ratio"] = ours["rps"] / base["rps"]
            pairs = _pair_ratios(ours, base, "rps")
            if pairs:
                row["throughput_ratio"], row["pair_ratios"] = median(pairs), pairs
            row["target"] = SERVING_TARGET
            row["met"] = row["throughput_ratio"] >= SERVING_TARGET
        else:
            row["ratio"] = ours["seconds"] / base["seconds"]
            pairs = _pair_ratios(ours, base, "seconds")
            if pairs:
                row["ratio"], row["pair_ratios"] = median(pairs), pairs
            row["target"] = TARGETS[stage]
            row["met"] = row["ratio"] <= TARGETS[stage]
        stages[stage] = row
    summary: dict[str, Any] = {"stages": stages}
    if all(s in stages for s in PIPELINE_STAGES):
        ours = sum(stages[s]["ours_seconds"] for s in PIPELINE_STAGES)
        base = sum(stages[s]["baseline_seconds"] for s in PIPELINE_STAGES)
        summary["end_to_end"] = {"ours_seconds": ours, "baseline_seconds": base,
                                 "ratio": ours / base, "target": END_TO_END_TARGET,
                                 "met": ours / base <= END_TO_END_TARGET,
                                 "peak_rss_mib": max(phases[f"{s}/ours"]["peak_rss_mib"]
                                                     for s in PIPELINE_STAGES)}
    return summary


def _target(stage: str, row: dict[str, Any]) -> str:
    """The target cell: `<= 1.3` (time ratio) or `>= 0.7` (serving's throughput ratio)."""
    return f"{'>=' if stage == 'serving' else '<='} {row['target']:g}"


def _met(row: dict[str, Any]) -> str:
    return "met" if row["met"] else "**not met**"


def _throughput(stage: str, phase: dict[str, Any], size: dict[str, Any]) -> str:
    if stage == "serving":
        return f"{phase['rps']:,.0f} req/s"
    if stage == "publish":
        return f"{phase.get('documents', 0) / phase['seconds']:,.0f} docs/s" \
            if phase.get("documents") else ""
    return f"{size['interactions'] / phase['seconds']:,.0f} interactions/s"


def _runs_line(results: dict[str, Any]) -> list[str]:
    """For results merged from partial runs (`--stage`): when each stage was measured."""
    if len(results.get("runs", [])) < 2:
        return []
    runs = "; ".join(
        f"{run['started_at']}: " + (run["stages"] if isinstance(run["stages"], str)
                                    else ", ".join(run["stages"]))
        + (f" (load {run['load_average_at_start'][0]:.1f})" if run.get("load_average_at_start")
           else "")
        for run in results["runs"])
    return ["", f"Merged from {len(results['runs'])} runs, each stage's two sides in the same "
                f"run: {runs}."]


def _load(results: dict[str, Any]) -> str:
    load = results["machine"].get("load_average_at_start")
    return f" (load average {load[0]:.1f})" if load else ""


def _heading(results: dict[str, Any]) -> str:
    size, phases = results["size"], results["phases"]
    if "generate" not in phases:
        return f"**{size['name']}**"
    generated = ("batch generated by an earlier run (reused)." if phases["generate"].get("reused")
                 else f"generation {phases['generate']['seconds']:.1f} s (not counted).")
    latest = "latest run " if len(results.get("runs", [])) > 1 else ""
    return (f"**{size['name']}**: {size['interactions']:,} interactions, {size['users']:,} "
            f"users, {size['items']:,} items; {results['machine']['cpus']} CPUs, "
            f"{results['machine']['memory_gib']} GiB; {latest}started {results['started_at']}"
            f"{_load(results)}; {generated}")


def markdown(results: dict[str, Any]) -> str:
    """The results as the markdown table docs/benchmarks.md shows, each row against its target."""
    size, summary, phases = results["size"], results["summary"], results["phases"]
    lines = [
        _heading(results),
        *_runs_line(results),
        "",
        "| stage | ours (s) | raw baseline | baseline (s) | ratio | target | met | "
        "ours peak RSS (MiB) | baseline peak RSS (MiB) | throughput (ours) |",
        "|---|---:|---|---:|---:|---|---|---:|---:|---|",
    ]
    for stage, row in summary["stages"].items():
        ratio = (f"{row['throughput_ratio']:.2f} (req/s)" if stage == "serving"
                 else f"{row['ratio']:.2f}")
        if row.get("pair_ratios"):
            ratio += (f" (median of {len(row['pair_ratios'])}: "
                      + ", ".join(f"{r:.2f}" for r in row["pair_ratios"]) + ")")
        publish_docs = phases.get("publish/baseline", {}).get("documents")
        ours = dict(phases[f"{stage}/ours"], documents=publish_docs)
        lines.append(
            f"| {stage} | {row['ours_seconds']:.1f} | {row['baseline']} | "
            f"{row['baseline_seconds']:.1f} | {ratio} | {_target(stage, row)} | {_met(row)} | "
            f"{row['ours_peak_rss_mib']:,.0f} | {row['baseline_peak_rss_mib']:,.0f} | "
            f"{_throughput(stage, ours, size)} |")
    if "end_to_end" in summary:
        e2e = summary["end_to_end"]
        lines.append(
            f"| **end to end** (validation..publish) | **{e2e['ours_seconds']:.1f}** | sum of "
            f"the four | **{e2e['baseline_seconds']:.1f}** | **{e2e['ratio']:.2f}** | "
            f"<= {e2e['target']:g} | {_met(e2e)} | {e2e['peak_rss_mib']:,.0f} | | |")
    if any(row.get("pair_ratios") for row in summary["stages"].values()):
        lines += ["", "With repeats, a ratio is the median of the pairs' ratios (each pair's two "
                      "sides ran back to back), not the quotient of the two sides' median "
                      "seconds shown beside it; peak RSS is the largest of all runs."]
    if "serving" in summary["stages"]:
        serving = phases["serving/ours"]
        lines += ["", f"Serving: {serving.get('connections', '?')} connections, "
                      f"{serving.get('workers', 1)} worker, cache on; ours p50 "
                      f"{serving.get('p50_ms', 0):.1f} ms, p99 {serving.get('p99_ms', 0):.1f} ms; "
                      "peak RSS is the API server's."]
    return "\n".join(lines) + "\n"
