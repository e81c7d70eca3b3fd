"""The API's documentation pages and the third-party assets the app serves itself (no CDN).

FastAPI's `/docs` (Swagger UI) and `/redoc` load their JavaScript and CSS from a CDN, so they are
blank without internet. Here the same pages (FastAPI's `get_swagger_ui_html`/`get_redoc_html`)
point at copies served under `ASSETS_PREFIX`, each folder from a maintained package:

- ``swagger-ui/``: Swagger UI and ReDoc bundles (``fastapi-offline``, which tracks both);
- ``jquery/``, ``bootstrap/`` (4.x), ``font-awesome/``: the XStatic packages, for the Data Docs
  pages (`serving.api.data_docs`);
- ``data-docs/``: our stand-in for bootstrap-table (``data_docs_static/``).

Like `/docs` and `/openapi.json`, the assets need no key: they hold no data.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import xstatic.pkg.bootstrap
import xstatic.pkg.font_awesome
import xstatic.pkg.jquery
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from serving.api.data_docs import ASSETS_PREFIX

ASSET_DIRS: dict[str, Path] = {
    "swagger-ui": Path(str(files("fastapi_offline") / "static")),
    "jquery": Path(xstatic.pkg.jquery.BASE_DIR),
    "bootstrap": Path(xstatic.pkg.bootstrap.BASE_DIR),
    "font-awesome": Path(xstatic.pkg.font_awesome.BASE_DIR),
    "data-docs": Path(__file__).parent / "data_docs_static",
}
"""Folder served at ``ASSETS_PREFIX/<name>/``, by name."""

SWAGGER_UI_PARAMETERS = {"validatorUrl": None}  # no badge fetched from swagger.io's validator


def assets_url(request: Request) -> str:
    """`ASSETS_PREFIX` as the browser must request it (behind a proxy's root path too)."""
    return f"{request.scope.get('root_path', '')}{ASSETS_PREFIX}"


def install_docs(app: FastAPI) -> None:
    """Mount the assets and add `/docs`, its OAuth2 redirect page and `/redoc`.

    The app must be made with ``docs_url=None, redoc_url=None`` (FastAPI's CDN pages).
    """
    for name, folder in ASSET_DIRS.items():
        app.mount(f"{ASSETS_PREFIX}/{name}", StaticFiles(directory=folder), name=f"assets-{name}")
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root, assets = request.scope.get("root_path", ""), assets_url(request)
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}",
            swagger_js_url=f"{assets}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{assets}/swagger-ui/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root, assets = request.scope.get("root_path", ""), assets_url(request)
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets}/swagger-ui/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/swagger-ui/favicon.png",
            with_google_fonts=False,
        )
