"""The one rule for ids that name things on disk and in MongoDB, and new run ids.

Run ids, model versions and feature snapshot ids become folder names (`models/<version>/`,
`features/.../snapshot=<id>/`) and parts of MongoDB collection names (`recs_<version>`,
`user_features_<snapshot>`), so they share one rule: 1-100 characters from ``[A-Za-z0-9_.=-]``,
starting with a letter or digit (so never ``.``/``..``, never a path separator, never ``$``).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from recsys.errors import InvalidId

ID_RULE = "1-100 characters from [A-Za-z0-9_.=-], starting with a letter or digit"
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]{0,99}")


def is_valid_id(value: object) -> bool:
    """True when `value` is a string that follows the id rule."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def check_id(value: object, *, kind: str) -> str:
    """Return `value` when it follows the id rule.

    Args:
        value: the id to check.
        kind: what the id names, for the message (e.g. "model version", "snapshot id").

    Raises:
        InvalidId: the message names the kind, the value and the rule.
    """
    if not is_valid_id(value):
        raise InvalidId(f"invalid {kind} {value!r}: use {ID_RULE}")
    return value  # type: ignore[return-value]


def new_run_id() -> str:
    """A sortable, unique run id (UTC time + random suffix); it also names the run's feature
    snapshot and model version."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
