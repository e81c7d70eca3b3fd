"""Ingest: read, validate (Great Expectations), quarantine and store incoming batches.

`ingest.stage.ingest_batch` is the one entry point: read a batch (`reader`), validate it
(`validate`), quarantine it when it fails (`quarantine`), and otherwise write it, normalized
(`normalize`, `writer`), into the raw store (`raw_store`, the only owner of `<data_dir>/store/`).
Files are held to structural rules while read (`input_checks`, `id_columns`), and every value
from a batch shown to people (messages, reports, Data Docs, artifacts) goes through `sanitize`.

Great Expectations is imported lazily (`ge_context.import_gx`), so importing this package and
reading the raw store stay cheap.
"""
