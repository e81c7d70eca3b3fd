"""The OpenAPI schema with the limits that come from the settings.

Some bounds are settings (`k` <= RECSYS_TOP_N, a batch of <= RECSYS_API_BATCH_MAX_USERS ids), so
they cannot be written into the declarations. A declaration names the setting instead, with
``json_schema_extra={SETTING_MAXIMUM: "top_n"}`` (or `SETTING_MAX_ITEMS`), and `install_openapi`
writes the value into the generated schema (into the integer or array branch of an optional
value). The checks themselves live where the values are used (`deps.build_options`, the batch
route); this only makes the schema say the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from recsys.settings import Settings

SETTING_MAXIMUM = "x-maximum-setting"
SETTING_MAX_ITEMS = "x-max-items-setting"
_KEYWORDS = {SETTING_MAXIMUM: ("maximum", "integer"), SETTING_MAX_ITEMS: ("maxItems", "array")}


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Make `app.openapi()` fill in the setting-dependent bounds (once, then cached)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _fill(generate(), settings)  # FastAPI caches the dict it returns; filled in place
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _fill(node: Any, settings: Settings) -> None:
    if isinstance(node, dict):
        for marker, (keyword, kind) in _KEYWORDS.items():
            if marker in node:
                value = getattr(settings, node.pop(marker))
                branches = [b for b in node.get("anyOf", ()) if b.get("type") == kind]
                for target in branches or [node]:
                    target[keyword] = value
        for child in node.values():
            _fill(child, settings)
    elif isinstance(node, list):
        for child in node:
            _fill(child, settings)
