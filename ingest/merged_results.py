"""Results of a chunked table merged into the GE results a whole-table run would give.

`MergedResult` folds one row-wise expectation's per-chunk results (counts summed, samples from
the first chunks, success decided on the totals, so ``mostly`` applies to the file).
`DuplicateKeys` and `row_count_result` evaluate the two expectations that need the whole file
(compound-key uniqueness, hashed as the chunks pass by `DuplicateFinder`; the row count) without
holding it. All of them build GE result objects, read like a whole-table run's.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from ingest.duplicates import KeyHashes
from ingest.ge_results import SAMPLE_SIZE, exception_messages

COMPOUND_UNIQUE = "expect_compound_columns_to_be_unique"


def _rendered_config(expectation: Any, parameters: dict[str, Any], batch_id: str | None) -> Any:
    """The expectation's configuration with its ``$PARAMETER`` values filled in, as GE renders
    it into a result (``batch_id`` included)."""
    config = expectation.configuration
    config.process_suite_parameters(suite_parameters=parameters, interactive_evaluation=True,
                                    data_context=None)
    config.kwargs["batch_id"] = batch_id
    return config


def _mostly_success(elements: int, considered: int, unexpected: int, mostly: Any) -> bool:
    """GE's verdict on a map expectation: vacuously true without rows to consider."""
    if elements == 0 or considered == 0:
        return True
    ratio = (float(considered) - float(unexpected)) / float(considered)
    return ratio >= (1.0 if mostly is None else mostly)


def _summary_result(elements: int, missing: int | None, unexpected: int, values: list[Any],
                    indexes: list[Any]) -> dict[str, Any]:
    """A map expectation's result in GE's SUMMARY shape (`_format_map_output`)."""
    total_percent = unexpected / elements * 100 if elements > 0 else None
    considered = elements - missing if missing is not None else elements
    if missing is None:
        percent = total_percent
    else:
        percent = unexpected / considered * 100 if elements > 0 and considered > 0 else None
    result: dict[str, Any] = {"element_count": elements, "unexpected_count": unexpected,
                              "unexpected_percent": percent,
                              "partial_unexpected_list": values[:SAMPLE_SIZE]}
    if missing is not None:
        result.update({"missing_count": missing,
                       "missing_percent": missing / elements * 100 if elements > 0 else None,
                       "unexpected_percent_total": total_percent,
                       "unexpected_percent_nonmissing": percent})
    hashable = [tuple(v.values()) if isinstance(v, dict) else v for v in values[:SAMPLE_SIZE]]
    try:
        result["partial_unexpected_counts"] = [
            {"value": value, "count": count}
            for value, count in sorted(Counter(hashable).most_common(SAMPLE_SIZE),
                                       key=lambda x: (-x[1], x[0]))]
    except TypeError:
        result["partial_unexpected_counts"] = [
            {"error": "partial_exception_counts requires a hashable type"}]
    result["partial_unexpected_index_list"] = indexes[:SAMPLE_SIZE]
    return result


class MergedResult:
    """One per-chunk expectation's results folded over the chunks. Only counts and samples are
    kept: a chunk's complete lists of offending rows (``drop``) are not held past its turn."""

    def __init__(self, expectation: Any) -> None:
        self.expectation = expectation
        self.config: Any = None  # the first chunk's configuration, as GE rendered it
        # (success, result, exception_info) standing for the file: the first error, or the
        # first chunk's result of an expectation on the columns.
        self.standing: tuple[bool, dict[str, Any], dict[str, Any]] | None = None
        self.errored = False
        self.elements = self.unexpected = 0
        self.missing: int | None = None
        self.values: list[Any] = []
        self.indexes: list[Any] = []

    def add(self, r: Any) -> list[Any]:
        """Fold in one chunk's result; return the row labels it adds to the sample."""
        from great_expectations.expectations.expectation_configuration import (
            ExpectationConfiguration,
        )

        if self.config is None:
            # The chunk suite's configuration under the main suite's id and meta.
            self.config = ExpectationConfiguration(
                type=r.expectation_config.type, kwargs=dict(r.expectation_config.kwargs),
                meta=self.expectation.meta, id=self.expectation.id)
        if self.errored:
            return []
        res = r.result or {}
        exception = dict(r.exception_info or {})
        if exception_messages(exception):
            self.errored = True
            self.standing = (bool(r.success), res, exception)
            return []
        if "unexpected_count" not in res:
            if self.standing is None:
                self.standing = (bool(r.success), res, exception)
            return []
        self.elements += int(res.get("element_count") or 0)
        self.unexpected += int(res.get("unexpected_count") or 0)
        if "missing_count" in res:
            self.missing = (self.missing or 0) + int(res.get("missing_count") or 0)
        room = SAMPLE_SIZE - len(self.indexes)
        new = list(res.get("partial_unexpected_index_list") or [])[:room]
        self.values += list(res.get("partial_unexpected_list") or [])[
            :SAMPLE_SIZE - len(self.values)]
        self.indexes += new
        return new

    def result(self) -> Any:
        """The expectation's result over the whole file, as a GE result."""
        from great_expectations.core.expectation_validation_result import (
            ExpectationValidationResult,
        )

        if self.standing is not None:
            success, res, exception = self.standing
            return ExpectationValidationResult(success=success, expectation_config=self.config,
                                               result=res, exception_info=exception)
        considered = self.elements - (self.missing or 0)
        return ExpectationValidationResult(
            success=_mostly_success(self.elements, considered, self.unexpected,
                                    self.config.kwargs.get("mostly")),
            expectation_config=self.config,
            result=_summary_result(self.elements, self.missing, self.unexpected, self.values,
                                   self.indexes),
            exception_info={"raised_exception": False, "exception_traceback": None,
                            "exception_message": None})


class DuplicateKeys:
    """``expect_compound_columns_to_be_unique`` over a whole chunked file: which rows repeat
    a key comes from `DuplicateFinder`; samples come as the chunks' results are merged."""

    def __init__(self, expectation: Any, columns: list[str], *, duplicated: Any = None,
                 ignored: int = 0, error: str | None = None, mostly: Any = None) -> None:
        self.expectation = expectation
        self.columns = columns
        self.duplicated = duplicated
        self.ignored = ignored
        self.error = error
        self.row_level = error is None and mostly in (None, 1, 1.0)
        self.values: list[Any] = []
        self.indexes: list[Any] = []

    def take_sample(self, values: list[Any], labels: list[Any]) -> list[Any]:
        """Fold in one chunk's sample of rows repeating a key (in file order); return the row
        labels it adds to the sample."""
        room = SAMPLE_SIZE - len(self.indexes)
        if room <= 0 or self.duplicated is None:
            return []
        self.values += values[:room]
        self.indexes += labels[:room]
        return labels[:room]

    def result(self, rows: int, parameters: dict[str, Any], batch_id: str | None) -> Any:
        """The expectation's result over the file's `rows` rows, as a GE result."""
        from great_expectations.core.expectation_validation_result import (
            ExpectationValidationResult,
        )

        config = _rendered_config(self.expectation, parameters, batch_id)
        if self.error is not None:
            return ExpectationValidationResult(
                success=False, expectation_config=config, result={},
                exception_info={"raised_exception": True, "exception_traceback": None,
                                "exception_message": self.error})
        unexpected = int(self.duplicated.sum())
        return ExpectationValidationResult(
            success=_mostly_success(rows, rows - self.ignored, unexpected,
                                    config.kwargs.get("mostly")),
            expectation_config=config,
            result=_summary_result(rows, self.ignored, unexpected, self.values, self.indexes),
            exception_info={"raised_exception": False, "exception_traceback": None,
                            "exception_message": None})


class DuplicateFinder:
    """Every compound-uniqueness expectation of `suite` over a whole chunked file: the key
    columns of each chunk are hashed as the chunks pass (`add`); `finish` marks the rows that
    repeat a key anywhere in the file."""

    def __init__(self, suite: Any, head: pd.DataFrame, parameters: dict[str, Any], *,
                 capacity: int, numeric_text: bool) -> None:
        self.suite = suite
        self.failed: dict[str, DuplicateKeys] = {}
        self.hashers: dict[str, KeyHashes] = {}
        self.mostly: dict[str, Any] = {}
        for expectation in suite.expectations:
            if expectation.expectation_type != COMPOUND_UNIQUE:
                continue
            kwargs = _rendered_config(expectation, parameters, None).kwargs
            columns = [str(c) for c in kwargs.get("column_list") or []]
            absent = [c for c in columns if c not in head.columns]
            if absent:
                self.failed[expectation.id] = DuplicateKeys(
                    expectation, columns, error=f"columns not found in the table: {absent}")
                continue
            self.mostly[expectation.id] = kwargs.get("mostly")
            self.hashers[expectation.id] = KeyHashes(
                columns, capacity=capacity,
                ignore_row_if=kwargs.get("ignore_row_if") or "all_values_are_missing",
                # CSV chunks may type a column differently (numbers in one, text in another).
                numeric_text=numeric_text)

    def add(self, chunk: pd.DataFrame) -> None:
        """Hash the key columns of the file's next rows."""
        for hasher in self.hashers.values():
            hasher.add(chunk)

    def finish(self) -> dict[str, DuplicateKeys]:
        """The expectations' findings, by expectation id."""
        found = dict(self.failed)
        for expectation_id, hasher in self.hashers.items():
            expectation = next(e for e in self.suite.expectations if e.id == expectation_id)
            found[expectation_id] = DuplicateKeys(
                expectation, hasher.columns, duplicated=hasher.duplicated(),
                ignored=int(hasher.ignored.sum()), mostly=self.mostly[expectation_id])
        return found


def row_count_result(expectation: Any, rows: int, parameters: dict[str, Any],
                     batch_id: str | None) -> Any:
    """``expect_table_row_count_to_be_between`` on the file's `rows`, as a GE result."""
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )

    config = _rendered_config(expectation, parameters, batch_id)
    low, high = config.kwargs.get("min_value"), config.kwargs.get("max_value")
    above = low is None or (rows > low if config.kwargs.get("strict_min") else rows >= low)
    below = high is None or (rows < high if config.kwargs.get("strict_max") else rows <= high)
    return ExpectationValidationResult(
        success=above and below, expectation_config=config, result={"observed_value": rows},
        exception_info={"raised_exception": False, "exception_traceback": None,
                        "exception_message": None})
