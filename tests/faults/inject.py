"""Run the `recsys` CLI with one fault injected at a pipeline stage (for tests/faults only).

    FAULT=<stage>:<kind>[:<path>] python -m tests.faults.inject pipeline --input DIR ...

- ``kill``: the process SIGKILLs itself as soon as the stage's work has returned (the stage
  boundary: its output is on disk, the task has not reported back); for ``publish``, inside
  `publish_model` with the lock held and the version written, right before anything switches.
- ``disk-full``: right before the stage's work starts, fill the file system that holds
  ``<path>`` with the file ``<path>`` until it has no space left (the test deletes it after).

A self-inflicted SIGKILL is the same event as an external `kill -9` (nothing runs after it), at a
point the test chooses exactly instead of one it races to hit.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import flows.tasks
import serving.lock
from recsys.cli import run

# stage -> the name flows.tasks calls for the stage's work
STAGE_WORK = {"validate": "ingest_batch", "features": "build_features_as_of",
              "train": "train_run_model", "score": "score_run_model",
              "publish": "publish_model"}


def fill_disk(path: str) -> None:
    """Write `path` until its file system is full (ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (1 << 20, 4096, 1):
            chunk = b"\0" * size
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)


def _say(message: str) -> None:
    sys.stderr.write(f"FAULT: {message}\n")
    sys.stderr.flush()


def _kill_self(stage: str) -> None:
    _say(f"kill -9 at {stage}")
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(fn: Callable[..., Any], *, before: Callable[[], None] | None = None,
          after: Callable[[], None] | None = None) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before:
            before()
        result = fn(*args, **kwargs)
        if after:
            after()
        return result

    return wrapper


def install(spec: str) -> None:
    """Install the fault that `spec` (``stage:kind[:path]``) describes."""
    stage, kind, *rest = spec.split(":", 2)
    name = STAGE_WORK[stage]
    work = getattr(flows.tasks, name)  # fails loudly if the flow stops calling it
    if kind == "kill" and stage == "publish":
        ensure_held = serving.lock.PublishLock.ensure_held
        serving.lock.PublishLock.ensure_held = _wrap(  # type: ignore[method-assign]
            ensure_held, before=lambda: _kill_self(stage))
    elif kind == "kill":
        setattr(flows.tasks, name, _wrap(work, after=lambda: _kill_self(stage)))
    elif kind == "disk-full":
        (path,) = rest

        def fill() -> None:
            fill_disk(path)
            _say(f"disk full before {stage}")

        setattr(flows.tasks, name, _wrap(work, before=fill))
    else:
        raise ValueError(f"unknown fault kind {kind!r}")


if __name__ == "__main__":
    install(os.environ["FAULT"])
    sys.argv[0] = "recsys"
    run()
