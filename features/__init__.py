"""Offline feature store on DuckDB and parquet, with MongoDB as the online store.

Modules: `registry` (views as code), `raw_store` (incremental, date-partitioned raw store),
`snapshot` (point-in-time builds, manifests), `stage` (entry points for flows), `online`
(materialization to MongoDB), `retention` (pruning snapshots), `diff`, `cli`
(`recsys features ...`).
"""
