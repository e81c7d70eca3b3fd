"""`recsys features ...` through typer's CliRunner."""

import json

import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.datagen import generate_batch

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path, monkeypatch, mongo_uri, mongo_db_name):
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", mongo_db_name)
    batch = generate_batch(tmp_path / "batch", users=40, items=20, interactions=600, seed=3)
    return batch.directory


def test_build_list_describe_diff_materialize_prune(env, tmp_path):
    runner = CliRunner()
    first = runner.invoke(app, ["features", "build", "--input", str(env),
                                "--as-of", "2025-06-30", "--snapshot-id", "june"])
    assert first.exit_code == 0, first.output
    assert "ingested" in first.output and "snapshot june as of 2025-06-30T23:59:59" in first.output
    again = runner.invoke(app, ["features", "build", "--input", str(env), "--snapshot-id", "all"])
    assert again.exit_code == 0, again.output
    assert "already in the raw store" in again.output

    listing = runner.invoke(app, ["features", "list"])
    assert listing.exit_code == 0 and "june" in listing.output and "all" in listing.output
    assert "user_features" in listing.output

    described = runner.invoke(app, ["features", "describe", "item_features", "--snapshot",
                                    "june", "--json"])
    assert described.exit_code == 0, described.output
    info = json.loads(described.output)
    assert info["definition"]["entity"] == "item" and info["snapshot"]["rows"] == 20
    stats = {s["column_name"]: s for s in info["snapshot"]["stats"]}
    assert "popularity_rank" in stats and "snapshot" not in stats
    assert runner.invoke(app, ["features", "describe", "nope"]).exit_code == 1

    diff = runner.invoke(app, ["features", "diff", "june", "all", "--json"])
    assert diff.exit_code == 0, diff.output
    inter = json.loads(diff.output)["views"]["interactions"]
    assert inter["rows_b"] > inter["rows_a"] and inter["keys_removed"] == 0
    assert inter["keys_added"] == inter["rows_b"] - inter["rows_a"]
    text = runner.invoke(app, ["features", "diff", "june", "all"])
    assert "keys:" in text.output and "version unchanged" in text.output

    online = runner.invoke(app, ["features", "materialize", "all"])
    assert online.exit_code == 0 and "snapshot all written" in online.output

    pruned = runner.invoke(app, ["features", "prune", "--keep", "1"])
    # "all" is materialized online, so it is protected; "june" is the only one to go
    assert pruned.exit_code == 0 and "deleted 1 snapshot(s): june" in pruned.output
    missing = runner.invoke(app, ["features", "diff", "june", "all"])
    assert missing.exit_code == 1 and "not found" in missing.output


def test_bad_as_of_is_a_usage_error(env):
    result = CliRunner().invoke(app, ["features", "build", "--as-of", "yesterday"])
    assert result.exit_code == 2
