"""Operator tools, each a plain function plus a small CLI (`python -m infra.scripts.<name>`).

- `backup`: MongoDB backup and restore (mongodump/mongorestore when installed, else pymongo + BSON).
- `prune`: old feature snapshots, model versions, backups, logs and Prefect results.
- `health`: MongoDB, the active serving version, disk space, and optionally the API and Prefect.

`flows/maintenance.py` runs them on a schedule.
"""
