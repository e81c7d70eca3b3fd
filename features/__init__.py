"""Offline feature store on DuckDB and parquet, with MongoDB as the online store.

Modules: `registry` (views as code), `snapshot` (point-in-time builds over the raw store that
`ingest.raw_store` owns, manifests), `stage` (entry points for flows), `online`
(materialization to MongoDB), `retention` (pruning snapshots), `diff`, `cli`
(`recsys features ...`).
"""
