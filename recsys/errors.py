"""The project's exception hierarchy, in one place.

Each error knows the HTTP status it maps to, so the API translates them without special cases, and
the CLI prints `str(error)` (never a traceback) and exits non-zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class RecsysError(Exception):
    """Root of every error this project raises on purpose."""

    status_code: int = 500


class InputFileError(RecsysError):
    """An input file is missing, unreadable, or breaks a structural rule.

    The message always names the file, the column (when there is one) and the rule.
    """

    status_code = 400

    def __init__(self, path: Path | str, problem: str, *, column: str | None = None,
                 rule: str | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.column = column
        self.rule = rule
        where = f"{self.path}"
        if column:
            where += f", column '{column}'"
        if rule:
            where += f", rule '{rule}'"
        super().__init__(f"{where}: {problem}")


class ValidationFailed(RecsysError):
    """A batch failed its data contract; `failures` lists each failed expectation."""

    status_code = 422

    def __init__(self, failures: list[dict[str, Any]], *, quarantine_dir: Path | None = None) -> None:
        self.failures = failures
        self.quarantine_dir = quarantine_dir
        lines = [f"{len(failures)} expectation(s) failed:"]
        for f in failures:
            where = str(f.get("file") or f.get("dataset"))
            if f.get("column"):
                where += f", column '{f['column']}'"
            rule = f"rule '{f['rule']}'" if f.get("rule") else f["expectation"]
            obs = f": {f['observed']}" if f.get("observed") is not None else ""
            sample = f" e.g. {f['sample'][:3]}" if f.get("sample") else ""
            lines.append(f"  - {where}, {rule}{obs}{sample}")
        if quarantine_dir is not None:
            lines.append(f"batch quarantined in {quarantine_dir}")
        super().__init__("\n".join(lines))


class StageFailed(RecsysError):
    """A pipeline stage failed; names the stage and wraps the cause."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        self.stage = stage
        self.cause = cause
        super().__init__(f"stage '{stage}' failed: {cause}")


class ModelError(RecsysError):
    """Training or evaluation input is unusable (empty matrix, shape mismatch, ...)."""


class PublishError(RecsysError):
    """Writing or switching a serving version failed; the previous version keeps serving."""


class NotFound(RecsysError):
    status_code = 404


class ServiceUnavailable(RecsysError):
    status_code = 503


class MongoServerError(RecsysError):
    """The embedded MongoDB server could not be started, stopped or reached."""


class FeatureStoreError(RecsysError):
    """A feature build, snapshot lookup, materialization or retention step failed.

    The message names the view, snapshot or file concerned.
    """
