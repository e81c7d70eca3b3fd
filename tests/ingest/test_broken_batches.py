"""The broken-batch corpus: each folder of `broken_batches/` breaks exactly one rule.

One model is published first by running the flow in-process. Then every broken batch goes
through the validate stage (`ingest.stage.ingest_batch`, what the flow's validate task runs) and
must fail with a message naming the file, column and rule, land intact in
`quarantine/<run id>/` with its reports, and leave the raw store and the served model version
and a user's recommendations exactly as they were. Each folder's `expected.json` says what the
failure must look like. Three of them (a failed expectation, an unreadable file, a missing
file) also go through the whole flow, which must stop at 'validate' with the same message.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from ingest.raw_store import list_batches
from ingest.stage import ingest_batch
from recsys.datagen import generate_batch
from recsys.errors import RecsysError
from recsys.settings import Settings

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parent / "broken_batches"
FAULTS = sorted(p.name for p in CORPUS.iterdir() if (p / "expected.json").is_file())
PROBE_USER = "u0000001"


def test_corpus_has_at_least_15_faults() -> None:
    assert len(FAULTS) >= 15


def _serving(env: dict[str, str]) -> tuple[str, dict[str, Any]]:
    with MongoClient(env["MONGODB_URI"]) as client:
        db = client[env["MONGODB_DB"]]
        version = db["serving_state"].find_one({"_id": "active"})["version"]
        recs = db[f"recs_{version}"].find_one({"_id": PROBE_USER})
    return version, recs


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, mongo_uri: str,
              prefect_harness: None) -> Iterator[dict[str, Any]]:
    """A data dir and database in which one model version is published and active."""
    from flows.pipeline import batch_pipeline

    root = tmp_path_factory.mktemp("corpus")
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": f"test_{uuid.uuid4().hex[:12]}",
           "RECSYS_DATA_DIR": str(root / "data"), "RECSYS_TOP_N": "10",
           "RECSYS_ITERATIONS": "3", "RECSYS_VALIDATION_DATA_DOCS": "false"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        batch = generate_batch(root / "good", users=120, items=60, interactions=3000, seed=5)
        state = batch_pipeline(str(batch.directory), return_state=True)
        assert state.is_completed(), state.message
        version, recs = _serving(env)
        assert recs is not None and recs["items"]
        yield {"env": env, "version": version, "recs": recs, "root": root}


def _copy_fault(fault: str, into: Path) -> tuple[Path, dict[str, bytes], dict[str, Any]]:
    """A copy of `fault`'s batch (quarantine moves its table files), its bytes, its
    expectations."""
    batch = into / fault
    shutil.copytree(CORPUS / fault, batch, ignore=shutil.ignore_patterns("expected.json"))
    originals = {p.name: p.read_bytes() for p in batch.iterdir()}
    return batch, originals, json.loads((CORPUS / fault / "expected.json").read_text())


def _assert_names_the_rule(message: str, expected: dict[str, Any]) -> None:
    assert expected["file"] in message and f"rule '{expected['rule']}'" in message, message
    if expected["column"]:
        assert f"column '{expected['column']}'" in message, message
    if expected["error"] == "ValidationFailed":
        assert "1 expectation(s) failed" in message, message


def _assert_quarantined_and_nothing_changed(published: dict[str, Any], run_id: str,
                                            batch: Path, originals: dict[str, bytes],
                                            expected: dict[str, Any], message: str) -> None:
    data_dir = Path(published["env"]["RECSYS_DATA_DIR"])
    quarantine = data_dir / "quarantine" / run_id
    assert str(quarantine) in message
    assert not batch.exists()  # moved, not copied
    for name, data in originals.items():
        assert (quarantine / name).read_bytes() == data
    report = json.loads((quarantine / "report.json").read_text())
    assert report["success"] is False and report["run_id"] == run_id
    assert {f["name"] for f in report["files"]} == set(originals)
    (failure,) = report["failures"]
    assert failure["rule"] == expected["rule"]
    assert failure["column"] == expected["column"]
    assert failure["file"].endswith(expected["file"])
    if "sample" in expected:
        assert failure["sample"] == expected["sample"]
        assert failure["rows"], "the report shows offending rows"
    assert expected["rule"] in (quarantine / "report.md").read_text()

    assert not (data_dir / "raw").exists()  # no copy of a batch outside the store
    assert len(list_batches(data_dir / "store")) == 1  # the published batch only
    assert not (data_dir / "store" / "_incoming").exists()
    assert (data_dir / "validation" / run_id / "report.json").is_file()
    assert _serving(published["env"]) == (published["version"], published["recs"])


@pytest.mark.parametrize("fault", FAULTS)
def test_broken_batch_is_rejected_and_quarantined(fault: str, published: dict[str, Any],
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in published["env"].items():
        monkeypatch.setenv(key, value)
    batch, originals, expected = _copy_fault(fault, tmp_path)
    run_id = f"fault-{fault}"

    with pytest.raises(RecsysError) as failed:
        ingest_batch(batch, run_id=run_id, settings=Settings())

    assert type(failed.value).__name__ == expected["error"]
    message = str(failed.value)
    _assert_names_the_rule(message, expected)
    _assert_quarantined_and_nothing_changed(published, run_id, batch, originals, expected,
                                            message)


# A failed expectation (ValidationFailed), an unreadable and a missing file (InputFileError).
@pytest.mark.parametrize("fault", ["age_out_of_range", "corrupt_parquet_users",
                                   "missing_items_file"])
def test_the_flow_stops_at_validate_with_the_stage_message(
        fault: str, published: dict[str, Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.pipeline import batch_pipeline

    for key, value in published["env"].items():
        monkeypatch.setenv(key, value)
    batch, originals, expected = _copy_fault(fault, tmp_path)
    run_id = f"flow-{fault}"

    state = batch_pipeline(str(batch), run_id=run_id, return_state=True)

    assert state.is_failed()
    message = state.message
    assert message.startswith("stage 'validate' failed:"), message
    _assert_names_the_rule(message, expected)
    _assert_quarantined_and_nothing_changed(published, run_id, batch, originals, expected,
                                            message)
