"""`GET /explorer`: an HTML page to look at what the model recommends, and why.

Rendered on the server (Jinja2, every value escaped), styled by a local stylesheet and a small
script under `/explorer/static/` (no CDN, nothing loaded from elsewhere: the Content Security
Policy allows this origin only). A browser cannot send `X-API-Key`, so the page also accepts the
key as `?key=` and repeats it in its own links; give the explorer a key of its own, since a URL
ends up in browser history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import AfterValidator
from starlette.staticfiles import StaticFiles

from serving.api.deps import ActiveVersionDep, ServicesDep, build_options, require_key_or_param
from serving.api.explorer import explorer_context, fmt_fixed, fmt_number, fmt_time
from serving.api.ids import ENTITY_ID_RULE, check_entity_id
from serving.api.models import error_responses
from serving.api.openapi import SETTING_MAXIMUM

_HERE = Path(__file__).resolve().parent.parent
STATIC_DIR = _HERE / "static"
TEMPLATES_DIR = _HERE / "templates"
STATIC_PATH = "/explorer/static"

_templates = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                         undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_templates.filters["num"] = fmt_number
_templates.filters["fixed"] = fmt_fixed
_templates.filters["when"] = fmt_time

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
                               "img-src 'self'; form-action 'self'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",  # the URL may carry ?key=
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

router = APIRouter(tags=["explorer"])
router.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="explorer-static")

EntityQuery = Annotated[str | None, AfterValidator(lambda v: v if v is None
                                                   else check_entity_id(v))]


@router.get(
    "/explorer",
    response_class=HTMLResponse,
    dependencies=[Depends(require_key_or_param)],
    responses={200: {"content": {"text/html": {}},
                     "description": "the explorer page"},
               **error_responses(401, 429, 503)},
    summary="The recommendations explorer (HTML)",
)
async def explorer(
    request: Request,
    svc: ServicesDep,
    active: ActiveVersionDep,
    user: Annotated[EntityQuery, Query(description=f"user id: {ENTITY_ID_RULE}")] = None,
    item: Annotated[EntityQuery, Query(
        description="show the similar items of this item")] = None,
    compare: Annotated[str | None, Query(
        max_length=100, description="a kept version to compare with (default: the previous "
                                    "one)")] = None,
    k: Annotated[int | None, Query(ge=1, description="items per list, 1..RECSYS_TOP_N; "
                                                     "default min(10, RECSYS_TOP_N)",
                                   json_schema_extra={SETTING_MAXIMUM: "top_n"})] = None,
) -> HTMLResponse:
    """A user's recommendations as `GET /users/{user_id}/recommendations` returns them (with
    titles, genres and the "because you liked" explanations), their recent history from the
    online feature store, the similar items of a chosen item, and what changed for this user
    from the previous (or a chosen) version, with each version's offline metrics."""
    size = build_options(k=k, limit=svc.settings.top_n, offset=0, exclude=None, genre=None,
                         filters=None, explain=False).k
    context = await explorer_context(svc, active, user=user or None, item=item or None,
                                     compare=compare or None, k=size)
    key = request.query_params.get("key")  # checked by require_key_or_param; kept in links
    params = {"user": user, "item": item, "compare": compare, "k": k, "key": key}

    def href(**changes: Any) -> str:
        merged = {**params, **changes}
        return "/explorer?" + urlencode({k: v for k, v in merged.items() if v})

    html = _templates.get_template("explorer.html").render(
        **context, href=href, key=key, k=size, static=STATIC_PATH)
    return HTMLResponse(html, headers=SECURITY_HEADERS)
