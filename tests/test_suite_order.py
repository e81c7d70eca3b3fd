"""The suite's own scheduling: the files `make test` starts first still exist."""

from __future__ import annotations

from tests.conftest import LONGEST_FILES, REPO_ROOT


def test_every_longest_file_exists_once() -> None:
    assert len(set(LONGEST_FILES)) == len(LONGEST_FILES)
    missing = [path for path in LONGEST_FILES if not (REPO_ROOT / path).is_file()]
    assert not missing, f"renamed or removed: update LONGEST_FILES in tests/conftest.py: {missing}"
