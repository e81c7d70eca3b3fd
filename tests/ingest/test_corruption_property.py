"""Property: a randomly corrupted batch either passes validation *correctly* or is rejected
cleanly (InputFileError / ValidationFailed naming the file and rule) -- it never crashes."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.normalize import TIMESTAMP_MAX, TIMESTAMP_MIN
from ingest.raw_store import StoredBatch
from ingest.reader import read_batch
from ingest.stage import ingest_batch
from recsys.errors import InputFileError, ValidationFailed
from recsys.settings import Settings

from .conftest import store_contents, stored_table, write_batch

FILES = ("users.csv", "items.csv", "interactions.csv")
NASTY = st.sampled_from(["", " ", "NA", "null", "-1", "1e400", "nan", "007", "\x00", "é",
                         "2099-01-01", "1700000000000", "a,b", '"', "\n", "9" * 30, "True"])


@st.composite
def corruptions(draw: st.DrawFn) -> tuple[str, str, object]:
    """(file, kind, argument) for one corruption of one file."""
    file = draw(st.sampled_from(FILES))
    kind = draw(st.sampled_from(["cell", "drop_column", "truncate", "bytes", "delimiter",
                                 "duplicate_row", "empty", "latin1", "extra_column"]))
    if kind == "cell":
        return file, kind, (draw(st.integers(0, 10)), draw(st.integers(0, 5)),
                            draw(st.one_of(NASTY, st.text(max_size=8))))
    if kind in ("truncate", "drop_column", "duplicate_row"):
        return file, kind, draw(st.integers(0, 400))
    if kind == "bytes":
        return file, kind, (draw(st.integers(0, 400)), draw(st.binary(min_size=1, max_size=6)))
    return file, kind, None


def _apply(path: Path, kind: str, arg: object) -> None:
    data = path.read_bytes()
    text = data.decode("utf-8")
    lines = text.splitlines()
    if kind == "cell":
        row, col, value = arg  # type: ignore[misc]
        row = 1 + row % max(1, len(lines) - 1)
        if row < len(lines):
            cells = lines[row].split(",")
            cells[col % len(cells)] = str(value)
            lines[row] = ",".join(cells)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    elif kind == "drop_column":
        col = int(arg) % len(lines[0].split(","))  # type: ignore[call-overload]
        path.write_text("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != col)
                                  for line in lines) + "\n", encoding="utf-8")
    elif kind == "truncate":
        path.write_bytes(data[: int(arg) % (len(data) + 1)])  # type: ignore[call-overload]
    elif kind == "bytes":
        at, blob = arg  # type: ignore[misc]
        at %= len(data) + 1
        path.write_bytes(data[:at] + blob + data[at:])
    elif kind == "delimiter":
        path.write_text(text.replace(",", ";"), encoding="utf-8")
    elif kind == "duplicate_row":
        row = 1 + int(arg) % max(1, len(lines) - 1)  # type: ignore[call-overload]
        path.write_text("\n".join(lines + lines[row:row + 1]) + "\n", encoding="utf-8")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "latin1":
        path.write_bytes(data + "x,caf\xe9\n".encode("latin-1"))
    elif kind == "extra_column":
        path.write_text("\n".join(f"{line},x" for line in lines) + "\n", encoding="utf-8")


def _assert_correct(stored: StoredBatch, settings_: Settings) -> None:
    """What passed must really satisfy the contract."""
    users, items, inter = (stored_table(settings_, stored, name).to_pandas()
                           for name in ("users", "items", "interactions"))
    for frame, key in ((users, "user_id"), (items, "item_id")):
        assert len(frame) >= 1
        assert frame[key].notna().all() and frame[key].is_unique
        assert (frame[key].str.strip() != "").all()
    assert items["title"].notna().all()
    assert len(inter) >= 1
    assert inter["user_id"].isin(users["user_id"]).all()
    assert inter["item_id"].isin(items["item_id"]).all()
    ts = inter["timestamp"]
    assert ts.notna().all() and (ts >= TIMESTAMP_MIN).all() and (ts < TIMESTAMP_MAX).all()
    assert (ts <= pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=1)).all()
    rating = inter["rating"].dropna()
    assert ((rating >= settings_.rating_min) & (rating <= settings_.rating_max)).all()
    assert set(inter.columns) <= {"user_id", "item_id", "timestamp", "rating", "weight",
                                  "event_type"}


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(corruption=corruptions())
def test_random_corruption_passes_correctly_or_is_rejected_cleanly(
        corruption: tuple[str, str, object]) -> None:
    file, kind, arg = corruption
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        batch = write_batch(root / "batch")
        _apply(batch / file, kind, arg)
        originals = {p.name: p.read_bytes() for p in batch.iterdir()}
        settings_ = Settings(data_dir=root / "data", validation_data_docs=False)
        try:
            result = ingest_batch(batch, run_id="prop", settings=settings_)
        except InputFileError as error:
            assert error.rule and str(error.path.name).split(".")[0] in {
                "users", "items", "interactions"}
            _assert_quarantined(root, originals)
            assert store_contents(settings_) == []
        except ValidationFailed as error:
            assert error.failures
            assert all(f.get("rule") and f.get("file") for f in error.failures)
            _assert_quarantined(root, originals)
            assert store_contents(settings_) == []
        else:
            assert result.report.success
            _assert_correct(result.stored, settings_)
            assert read_batch(batch)  # a passing batch stays where it was
        finally:
            shutil.rmtree(root / "data", ignore_errors=True)


def _assert_quarantined(root: Path, originals: dict[str, bytes]) -> None:
    quarantine = root / "data" / "quarantine" / "prop"
    for name, data in originals.items():
        assert (quarantine / name).read_bytes() == data
    assert (quarantine / "report.json").is_file()
