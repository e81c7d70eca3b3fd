"""Progress callbacks: how long work tells its caller how far it has got.

Library functions of every layer take an optional ``progress`` callback and call it as work
advances; they never draw anything themselves. Whoever calls them decides what to show: the
flow tasks hand in rich progress bars when a terminal is attached (`flows/progress.py`), tests
hand in a recorder, everyone else passes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[str, int, int | None], None]
"""``progress(step, done, total)``: `done` units of the named `step` are finished, out of
`total` (None when unknown). Called after each unit of work (a chunk, an iteration, a batch),
with `done` growing; a step ends when `done` reaches `total`."""


def report_progress(progress: ProgressCallback | None, step: str, done: int,
                    total: int | None) -> None:
    """Call `progress` when there is one (libraries call this, not the callback directly)."""
    if progress is not None:
        progress(step, done, total)
