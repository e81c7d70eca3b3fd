"""The rule for the ids a request may carry, as types for paths, queries and bodies.

User and item ids come from the input data, so the rule is about text, not an alphabet: 1-512
characters of valid Unicode (a lone surrogate cannot be encoded for MongoDB or in a JSON answer)
without control characters (which would also reach the logs). Model versions in admin bodies
follow the stricter rule of names on disk and in MongoDB (`recsys/ids.py`). A bad id is a 422
whose message states the rule and never echoes the value.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, Field

from recsys.ids import ID_RULE, is_valid_id

MAX_ENTITY_ID_CHARS = 512
ENTITY_ID_RULE = (f"1-{MAX_ENTITY_ID_CHARS} characters of valid Unicode text without control "
                  "characters")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_entity_id(value: str, *, what: str = "an id") -> str:
    """Return `value` when it is a legal user or item id.

    Raises:
        ValueError: the message states the rule (pydantic and `deps.build_options` turn it
            into a 422).
    """
    ok = 0 < len(value) <= MAX_ENTITY_ID_CHARS and not _CONTROL.search(value)
    if ok:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            ok = False
    if not ok:
        raise ValueError(f"{what} must be {ENTITY_ID_RULE}")
    return value


def _check_version(value: str) -> str:
    if not is_valid_id(value):
        raise ValueError(f"a model version must be {ID_RULE}")
    return value


# The rule in the OpenAPI schema (so schema-driven clients and fuzzers generate legal ids); the
# check itself is `check_entity_id`, which also refuses lone surrogates and gives one message.
_ENTITY_SCHEMA = {"minLength": 1, "maxLength": MAX_ENTITY_ID_CHARS,
                  "pattern": r"^[^\x00-\x1f\x7f]*$"}

EntityId = Annotated[str, AfterValidator(check_entity_id),
                     Field(json_schema_extra=_ENTITY_SCHEMA)]
"""A user or item id in a body list."""
ModelVersion = Annotated[str, AfterValidator(_check_version),
                         Field(json_schema_extra={"minLength": 1, "maxLength": 100,
                                                  "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$"})]
"""A model version in an admin body."""
UserIdPath = Annotated[str, AfterValidator(check_entity_id),
                       Path(description=f"user id: {ENTITY_ID_RULE}",
                            json_schema_extra=_ENTITY_SCHEMA)]
ItemIdPath = Annotated[str, AfterValidator(check_entity_id),
                       Path(description=f"item id: {ENTITY_ID_RULE}",
                            json_schema_extra=_ENTITY_SCHEMA)]
