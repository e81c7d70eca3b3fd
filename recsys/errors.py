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

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled across processes (a part run on a Dask worker) and rebuilt without calling
        # __init__, whose arguments differ per subclass: same type, message and attributes.
        return _rebuild_error, (type(self), self.args, self.__dict__)


def _rebuild_error(cls: type[RecsysError], args: tuple[Any, ...], state: dict[str, Any]
                   ) -> RecsysError:
    error = cls.__new__(cls, *args)
    error.__dict__.update(state)
    return error


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


class QuarantineError(RecsysError):
    """A rejected batch could not be copied aside intact; its originals were left in place."""

    status_code = 500


class StageFailed(RecsysError):
    """A pipeline stage failed; names the stage and the one-line cause its task reported."""

    def __init__(self, stage: str, cause: str | None) -> None:
        self.stage = stage
        self.cause = cause or "unknown error"
        super().__init__(f"stage '{stage}' failed: {self.cause}")


class ModelError(RecsysError):
    """Training or evaluation input is unusable (empty matrix, shape mismatch, ...), or a saved
    model version is incomplete or damaged."""

    status_code = 422


class PublishError(RecsysError):
    """Writing or switching a serving version failed; the previous version keeps serving."""


class PublishLockTimeout(PublishError):
    """Gave up waiting for the publish lock; the message names its holder and its lease."""

    status_code = 409


class InvalidId(RecsysError):
    """An id that names things on disk and in MongoDB breaks the id rule (`recsys/ids.py`)."""

    status_code = 400


class BackupError(RecsysError):
    """A MongoDB backup or restore could not be made or is unusable."""


class NotFound(RecsysError):
    status_code = 404


class Conflict(RecsysError):
    """The request conflicts with the current state (e.g. a version that is not ready)."""

    status_code = 409


class Unauthorized(RecsysError):
    """No API key, or an unknown one."""

    status_code = 401


class Forbidden(RecsysError):
    """A valid API key without the rights the endpoint needs (or admin is disabled)."""

    status_code = 403


class RateLimited(RecsysError):
    """The caller's rate limit is exhausted; `retry_after` is the seconds until it refills."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class ServiceUnavailable(RecsysError):
    status_code = 503


class SettingsError(RecsysError):
    """A setting (environment variable or `.env` key) is unknown or has an invalid value."""


class MongoServerError(RecsysError):
    """The embedded MongoDB server could not be started, stopped or reached."""


class PrefectServerError(RecsysError):
    """The local Prefect API server of a run could not be started."""


class DaskClusterError(RecsysError):
    """The Dask cluster of a run (RECSYS_TASK_RUNNER=dask) could not be reached or started, or a
    part of a stage lost its worker more often than Dask retries it."""

    status_code = 503


class FeatureStoreError(RecsysError):
    """A feature build, snapshot lookup, materialization or retention step failed.

    The message names the view, snapshot or file concerned.
    """
