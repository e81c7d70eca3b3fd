"""Issue 15: the chunks of a streamed table are validated as parts through a mapper. Parts run
in other processes (a process pool standing in for Dask workers) give the same report, dropped
rows and raw-store batch as `serial_map`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ingest.stage import ingest_batch
from ingest.validation_part import validate_part
from recsys.errors import ValidationFailed
from recsys.partitions import serial_map
from recsys.settings import DatasetContract, Settings

from .conftest import store_contents, stored_table, write_batch
from .test_chunked_validation import HEADER, NOW, _broken_rows


class PoolMapper:
    """Runs every part in a pool of worker processes and records what it was given."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self.pool = pool
        self.calls: list[tuple[str, Any, int]] = []

    def __call__(self, label: str, fn: Callable[..., Any],
                 args_list: Sequence[tuple[Any, ...]]) -> list[Any]:
        self.calls.append((label, fn, len(args_list)))
        # Parts get paths and plain values only: they cross process boundaries as they are.
        assert all(isinstance(a, str | int | float | bool | type(None))
                   for args in args_list for a in args)
        return list(self.pool.map(fn, *zip(*args_list, strict=True)))


def _settings(root: Path, **kwargs: Any) -> Settings:
    return Settings(data_dir=root, validation_data_docs=False, validate_chunk_rows=7, **kwargs)


def _comparable(report: Any, settings: Settings, batch: Path) -> dict[str, Any]:
    document = report.to_dict()
    for suite in document["suites"]:
        suite.pop("seconds")
    text = json.dumps(document).replace(str(batch), "<batch>")
    return json.loads(text.replace(str(settings.data_dir), "<data>"))


def _run(root: Path, rows: list[str], mapper: Any, **kwargs: Any) -> tuple[Any, dict, Settings]:
    batch = write_batch(root / "batch", interactions=HEADER + "\n" + "\n".join(rows) + "\n")
    settings = _settings(root / "data", **kwargs)
    seen: list[Any] = []
    extra = {} if mapper is None else {"mapper": mapper}
    try:
        result: Any = ingest_batch(batch, run_id="run", settings=settings, now=NOW,
                                   on_report=seen.append, **extra)
    except ValidationFailed as error:
        result = error
    return result, _comparable(seen[0], settings, batch), settings


@pytest.fixture(scope="module")
def pool() -> Any:
    with ProcessPoolExecutor(max_workers=2) as executor:
        yield executor


def test_parts_in_worker_processes_give_the_serial_outcome(tmp_path: Path,
                                                           pool: ProcessPoolExecutor) -> None:
    drop = {"max_duplicate_interaction_fraction": 0.0,
            "contracts": {"interactions": DatasetContract(policy="drop",
                                                          max_invalid_fraction=0.5)}}
    mapper = PoolMapper(pool)
    serial, serial_report, serial_settings = _run(tmp_path / "serial", _broken_rows(), None,
                                                  **drop)
    parallel, report, settings = _run(tmp_path / "pool", _broken_rows(), mapper, **drop)

    assert mapper.calls == [("validate interactions", validate_part, 5)]  # 30 rows / 7
    assert report == serial_report and report["success"]
    assert report["dropped"]["interactions"]["rows"] == 10
    for dataset in ("users", "items", "interactions"):
        assert stored_table(settings, parallel.stored, dataset).equals(
            stored_table(serial_settings, serial.stored, dataset)), dataset
    assert parallel.stored.batch_id == serial.stored.batch_id  # the same content hash
    aside = Path(parallel.report.dropped["interactions"]["file"])
    assert aside.read_text() == Path(serial.report.dropped["interactions"]["file"]).read_text()
    assert pd.read_csv(aside, dtype=str)["_failed_rules"].notna().all()
    assert not any(p.startswith("_") for p in store_contents(settings))  # no parts left


def test_a_failing_batch_is_reported_alike_from_worker_processes(
        tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    serial, serial_report, _ = _run(tmp_path / "serial", _broken_rows(), None)
    parallel, report, settings = _run(tmp_path / "pool", _broken_rows(), PoolMapper(pool))

    assert isinstance(parallel, ValidationFailed) and isinstance(serial, ValidationFailed)
    assert report == serial_report
    assert str(parallel).replace(str(tmp_path / "pool"), "") == \
        str(serial).replace(str(tmp_path / "serial"), "")
    assert (settings.quarantine_dir / "run" / "interactions.csv").is_file()
    assert store_contents(settings) == []


def test_a_part_is_idempotent(tmp_path: Path) -> None:
    """Dask may run a part again after a worker died: a rerun returns the same summary and
    rewrites the same files."""
    inputs = tmp_path / "inputs"
    runs: list[tuple[Any, ...]] = []

    def copying(label: str, fn: Callable[..., Any],
                args_list: Sequence[tuple[Any, ...]]) -> list[Any]:
        folder = str(Path(args_list[0][0]).parent)
        shutil.copytree(folder, inputs)  # the parts' inputs, before any part ran
        runs.extend(tuple(a.replace(folder, str(inputs)) if isinstance(a, str) else a
                          for a in args) for args in args_list)
        return serial_map(label, fn, args_list)

    result, _, _ = _run(tmp_path, _broken_rows(), copying, max_duplicate_interaction_fraction=0.0,
                        contracts={"interactions": DatasetContract(policy="drop",
                                                                   max_invalid_fraction=0.5)})
    assert result.report.success and len(runs) == 5
    first = validate_part(*runs[1])
    kept, dropped = (Path(first[k]).read_bytes() for k in ("kept", "dropped"))
    second = validate_part(*runs[1])
    assert _summary(second) == _summary(first) and first["invalid_rows"] > 0
    assert (Path(second["kept"]).read_bytes(), Path(second["dropped"]).read_bytes()) == (
        kept, dropped)


def _summary(outcome: dict[str, Any]) -> dict[str, Any]:
    out = dict(outcome)
    out.pop("run")  # GE's run id and validation time differ from run to run
    return out
