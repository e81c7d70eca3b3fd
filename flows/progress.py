"""Progress bars on the terminal for the long steps inside the flow tasks (rich).

The tasks hand a `ProgressCallback` (`recsys/progress.py`) to the plain functions they call;
`progress_bars` makes one that draws a rich bar per step (validation chunks, the feature views,
ALS iterations, scoring and publish batches) when a terminal is attached to stderr, and
nothing otherwise: a worker, CI or a redirected `recsys pipeline` keeps clean logs.

While bars are drawn rich redirects ``sys.stderr``, so log handlers that write to the current
``sys.stderr`` (the CLI's) print above the bars instead of through them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from recsys.progress import ProgressCallback


def terminal_attached() -> bool:
    """True when stderr is an interactive terminal (where bars can redraw in place)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class ProgressBars:
    """A `ProgressCallback` that keeps one rich bar per step name."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, step: str, done: int, total: int | None) -> None:
        task = self._tasks.get(step)
        if task is None:
            task = self._tasks[step] = self._progress.add_task(step, total=total)
        self._progress.update(task, completed=done, total=total)


@contextmanager
def progress_bars(console: Console | None = None) -> Iterator[ProgressCallback | None]:
    """Bars for the steps reported inside the block, or None without a terminal.

    Args:
        console: where to draw (tests pass their own); default: stderr, when it is a terminal.
    """
    if console is None:
        if not terminal_attached():
            yield None
            return
        console = Console(stderr=True)
    with Progress(TextColumn("  {task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        yield ProgressBars(progress)
