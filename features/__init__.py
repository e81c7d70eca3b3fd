"""Offline feature store on DuckDB and parquet, with MongoDB as the online store.

Modules: `registry` (views as code), `sources` (a build's input files: one batch or the raw
store that `ingest.raw_store` owns, as of a time), `relations` (what the views' SQL reads),
`parts` (the two build phases: per user part, then the merge), `snapshot` (point-in-time
builds, manifests), `stage` (entry points for flows), `online` (materialization to MongoDB),
`retention` (pruning snapshots), `diff`, `cli` (`recsys features ...`).
"""
