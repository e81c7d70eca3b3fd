"""The one id rule (recsys/ids.py) and new run ids."""

from __future__ import annotations

import re

import pytest

from recsys.errors import InvalidId
from recsys.ids import check_id, is_valid_id, new_run_id


@pytest.mark.parametrize("value", ["v1", "20240101T000000Z-abc123", "as_of=2024-01-01", "A.b-c_d",
                                   "x" * 100])
def test_valid_ids(value: str) -> None:
    assert is_valid_id(value) and check_id(value, kind="model version") == value


@pytest.mark.parametrize("value", ["", ".hidden", "-x", "_x", "a b", "a/b", "../x", "v$1",
                                   "x" * 101, "é", None, 7])
def test_invalid_ids_name_the_kind_and_the_rule(value: object) -> None:
    assert not is_valid_id(value)
    with pytest.raises(InvalidId, match=r"invalid snapshot id .*\[A-Za-z0-9_.=-\]") as error:
        check_id(value, kind="snapshot id")
    assert error.value.status_code == 400


def test_new_run_ids_are_valid_sortable_and_unique() -> None:
    ids = [new_run_id() for _ in range(50)]
    assert all(re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", i) and is_valid_id(i) for i in ids)
    assert len(set(ids)) == 50
