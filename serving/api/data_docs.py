"""Great Expectations Data Docs over HTTP: the files of one run, and pages that load nothing
from the internet.

Ingest writes each run's Data Docs to ``<data_dir>/validation/<run id>/data-docs/``; the API
serves that folder read-only at ``/admin/data-docs/<run id>/`` (`routes/data_docs.py`), and the
pipeline's Prefect artifact links there (`data_docs_url`).

GE's pages take jQuery, Bootstrap 4, bootstrap-table, Font Awesome, Vega and its logos from
CDNs. `localize_html` points them at the packaged copies the API serves under
`ASSETS_PREFIX` (`serving/api/docs.py`): jQuery, Bootstrap 4 (its bundle includes Popper) and
Font Awesome from their XStatic packages, and, as no maintained package ships bootstrap-table,
a small stand-in of our own (``data_docs_static/bootstrap-table-lite.js``: the index page's
lists, sorting, search and row links). What has no local copy (Vega charts, the date-picker and
filter controls of the index, a dark theme) is left out; logos come from the site's own
``static/images/``. This module is plain Python so flows can build links without FastAPI.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from recsys.errors import NotFound
from recsys.ids import is_valid_id
from recsys.settings import Settings

DATA_DOCS_ROUTE = "/admin/data-docs"
DATA_DOCS_FOLDER = "data-docs"
"""Ingest's folder name under ``validation/<run id>/`` (written by `ingest.stage`)."""
ASSETS_PREFIX = "/assets"
"""Where `serving.api.docs` mounts the packaged assets (one folder per name below)."""

# (needle in the CDN URL, local file under ASSETS_PREFIX or None to leave it out); first match.
_LOCAL_ASSETS: tuple[tuple[str, str | None], ...] = (
    ("filter-control", None),
    ("bootstrap-table", "data-docs/bootstrap-table-lite.js"),
    ("datepicker", None),
    ("bootstrap-dark", None),
    ("popper", None),  # in Bootstrap's bundle
    ("jquery", "jquery/jquery.min.js"),
    ("font-awesome", "font-awesome/css/all.min.css"),
    ("bootstrap.min.js", "bootstrap/js/bootstrap.bundle.min.js"),
    ("bootstrap.min.css", "bootstrap/css/bootstrap.min.css"),
)
_EXTERNAL = r"(?:https?:)?//[^\"'\s>)]*"
_SCRIPT = re.compile(rf"<script\b[^>]*\bsrc=[\"']({_EXTERNAL})[\"'][^>]*>\s*</script>", re.I)
_LINK = re.compile(rf"<link\b[^>]*\bhref=[\"']({_EXTERNAL})[\"'][^>]*>", re.I)
_IMG = re.compile(rf"<img\b([^>]*?)\bsrc=[\"']({_EXTERNAL})[\"']([^>]*)>", re.I)
_CSS_URL = re.compile(rf"url\(\s*([\"']?)({_EXTERNAL})\1\s*\)", re.I)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'none'; frame-ancestors 'none'"
)
"""For served Data Docs pages: GE's inline scripts run, nothing loads from elsewhere."""


def docs_dir(validation_dir: Path, run_id: str) -> Path:
    """The Data Docs folder of a run (it may not exist)."""
    return validation_dir / run_id / DATA_DOCS_FOLDER


def resolve(validation_dir: Path, run_id: str, path: str) -> Path:
    """The file `path` (relative, '/'-separated; '' is the index) of a run's Data Docs.

    Raises:
        NotFound: no such run or file, or a path that would leave the run's Data Docs folder
            (``..``, absolute, a link pointing outside).
    """
    missing = NotFound(f"no Data Docs page {path or 'index.html'!r} for run {run_id!r}")
    if not is_valid_id(run_id):
        raise missing
    parts = PurePosixPath(path or "index.html").parts
    if any(p in ("..", ".") or "\\" in p or "\x00" in p for p in parts) or path.startswith("/"):
        raise missing
    root = docs_dir(validation_dir, run_id).resolve()
    file = root.joinpath(*parts).resolve()
    if not file.is_relative_to(root) or not file.is_file():
        raise missing
    return file


def localize_html(html: str, *, assets_url: str, site_url: str, site_dir: Path) -> str:
    """GE's page with every script, stylesheet, image and CSS `url()` from elsewhere replaced by
    a served copy, or removed where there is none.

    Args:
        html: the page as GE wrote it.
        assets_url: the URL of `ASSETS_PREFIX` (with the app's root path).
        site_url: the URL of the run's Data Docs folder, ending in '/'.
        site_dir: that folder on disk (logos are taken from its ``static/images/``).
    """

    def local(url: str) -> str | None:
        for needle, target in _LOCAL_ASSETS:
            if needle in url:
                return f"{assets_url}/{target}" if target else None
        return None

    def image(url: str) -> str | None:
        name = PurePosixPath(url.split("?", 1)[0]).name
        known = name and (site_dir / "static" / "images" / name).is_file()
        return f"{site_url}static/images/{name}" if known else None

    def script(m: re.Match[str]) -> str:
        target = local(m.group(1))
        return f'<script src="{target}"></script>' if target else ""

    def link(m: re.Match[str]) -> str:
        target = local(m.group(1))
        return f'<link rel="stylesheet" href="{target}">' if target else ""

    def img(m: re.Match[str]) -> str:
        target = image(m.group(2))
        return f'<img{m.group(1)}src="{target}"{m.group(3)}>' if target else ""

    def css_url(m: re.Match[str]) -> str:
        target = image(m.group(2))
        return f"url('{target}')" if target else "none"

    html = _SCRIPT.sub(script, html)
    html = _LINK.sub(link, html)
    html = _IMG.sub(img, html)
    return _CSS_URL.sub(css_url, html)


def public_base_url(settings: Settings) -> str:
    """The API's address as a browser reaches it: `api_public_url`, else built from the bind
    address (a wildcard bind is reached on the loopback address)."""
    if settings.api_public_url:
        return settings.api_public_url.rstrip("/")
    host = settings.api_host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}"


def data_docs_url(settings: Settings, run_id: str, page: str = "index.html") -> str:
    """The http(s) URL of a page of a run's Data Docs as the API serves it."""
    return f"{public_base_url(settings)}{DATA_DOCS_ROUTE}/{run_id}/{page.lstrip('/')}"
