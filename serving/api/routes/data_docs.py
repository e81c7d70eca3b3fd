"""`/admin/data-docs/{run_id}/...`: a run's Great Expectations Data Docs, read-only, offline.

Behind an admin key like every admin route; a browser opening the pipeline's link gets an HTTP
Basic prompt (any user name, an admin key as the password) and then follows the pages' relative
links with the same credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from serving.api import data_docs
from serving.api.deps import SettingsDep, require_admin_browser
from serving.api.docs import assets_url
from serving.api.models import ErrorPublic, error_responses

router = APIRouter(prefix=data_docs.DATA_DOCS_ROUTE, tags=["admin"],
                   dependencies=[Depends(require_admin_browser)],
                   responses={**error_responses(401, 403, 429),
                              404: {"model": ErrorPublic,
                                    "description": "no such run, or no such file in its Data "
                                                   "Docs"}})

RunIdPath = Annotated[str, PathParam(
    description="the pipeline run id (its `validation/<run id>/` folder)",
    examples=["20260105T101500Z-1a2b3c"])]
_HTML_HEADERS = {"Content-Security-Policy": data_docs.CONTENT_SECURITY_POLICY,
                 "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


@router.get("/{run_id}", response_class=RedirectResponse, status_code=307,
            summary="A run's Data Docs (redirects to its index page)")
async def data_docs_root(run_id: RunIdPath, request: Request) -> RedirectResponse:
    """Redirects to `{run_id}/`, so the index page's relative links resolve."""
    return RedirectResponse(f"{request.scope.get('root_path', '')}"
                            f"{data_docs.DATA_DOCS_ROUTE}/{run_id}/", status_code=307)


@router.get(
    "/{run_id}/{path:path}",
    response_class=HTMLResponse,
    summary="A page or file of a run's Great Expectations Data Docs",
    responses={200: {"content": {"text/html": {}, "image/png": {}, "text/css": {}},
                     "description": "the file; HTML pages load only assets this API serves"}},
)
async def data_docs_file(run_id: RunIdPath, path: str, request: Request,
                         settings: SettingsDep) -> Response:
    """Serves `<data_dir>/validation/<run_id>/data-docs/<path>` (the index page for an empty
    path), read-only; nothing outside that folder (404). HTML pages are rewritten to load their
    scripts, styles and images from this API instead of CDNs, so they render offline."""
    site_dir = data_docs.docs_dir(settings.validation_dir, run_id)
    site_url = f"{request.scope.get('root_path', '')}{data_docs.DATA_DOCS_ROUTE}/{run_id}/"
    assets = assets_url(request)

    def read() -> tuple[Path, str | None]:  # file system work off the event loop
        file = data_docs.resolve(settings.validation_dir, run_id, path)
        if file.suffix.lower() not in (".html", ".htm"):
            return file, None
        html = file.read_text(encoding="utf-8", errors="replace")
        return file, data_docs.localize_html(html, assets_url=assets, site_url=site_url,
                                             site_dir=site_dir)

    file, page = await anyio.to_thread.run_sync(read)
    if page is None:
        return FileResponse(file, headers={"X-Content-Type-Options": "nosniff"})
    return HTMLResponse(page, headers=_HTML_HEADERS)
