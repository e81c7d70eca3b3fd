"""Regression (issue 16): Great Expectations Data Docs over HTTP, behind the admin key, offline.

Before the fix the Prefect artifact was a file:// link (Chromium refuses to open it) and GE's
index page loaded jQuery, Bootstrap and bootstrap-table from CDNs (unstyled, empty lists
offline). The Data Docs here are real ones, built by `ingest_batch` once for the module.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import ValidationError

from flows.tasks import _report_link
from ingest.report import ValidationReport
from ingest.stage import ingest_batch
from recsys.errors import NotFound
from recsys.settings import Settings
from serving.api.data_docs import (
    data_docs_url,
    docs_dir,
    localize_html,
    public_base_url,
    resolve,
)
from serving.api.main import create_app

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

KEY, ADMIN = "user-key-1", "admin-key-1"
RUN = "20260105T101500Z-abc123"
BASIC = ("anyone", ADMIN)
_EXTERNAL = r"(?:https?:)?//"
_SRC = re.compile(r"""\bsrc\s*=\s*["']([^"']*)["']""", re.I)
_LINK_TAG = re.compile(r"""<link\b[^>]*\bhref\s*=\s*["']([^"']*)["']""", re.I)
_CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+)""", re.I)
_ANCHOR = re.compile(r"""<a\b[^>]*\bhref\s*=\s*["']([^"']*)["']""", re.I)
_ANY_URL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[a-z]{2,}[^\s"'<>)]*""")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding the Data Docs of one validated batch (run `RUN`)."""
    root = tmp_path_factory.mktemp("data-docs")
    batch = root / "batch"
    batch.mkdir()
    (batch / "users.csv").write_text("user_id,age,gender,occupation,zip\n"
                                     "1,24,M,technician,85711\n2,53,F,other,94043\n")
    (batch / "items.csv").write_text("item_id,title,genres\n1,Toy Story (1995),Comedy\n"
                                     "2,GoldenEye (1995),Action|Thriller\n")
    (batch / "interactions.csv").write_text("user_id,item_id,timestamp,rating\n"
                                            "1,1,881250949,5\n2,1,881250950,4\n1,2,881250951,3\n")
    settings = Settings(data_dir=root / "data")
    report = ingest_batch(batch, run_id=RUN, settings=settings).report
    assert report.data_docs == str(docs_dir(settings.validation_dir, RUN) / "index.html")
    return root / "data"


@pytest.fixture
async def app(data_dir: Path, mongo_uri: str, db_name: str) -> AsyncIterator[FastAPI]:
    settings = Settings(mongodb_uri=mongo_uri, mongodb_db=db_name, data_dir=data_dir,
                        api_keys=KEY, admin_api_keys=ADMIN, api_log_json=False)
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def _site(data_dir: Path) -> Path:
    return docs_dir(data_dir / "validation", RUN)


def _loaded(html: str) -> list[str]:
    """Every URL the page makes the browser load: src=, <link href=>, CSS url()."""
    return _SRC.findall(html) + _LINK_TAG.findall(html) + _CSS_URL.findall(html)


async def test_data_docs_need_an_admin_key(client: httpx.AsyncClient) -> None:
    url = f"/admin/data-docs/{RUN}/index.html"
    anonymous = await client.get(url)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith('Basic realm="recsys admin"')
    assert (await client.get(url, headers={"X-API-Key": KEY})).status_code == 403
    assert (await client.get(url, auth=("x", KEY))).status_code == 403
    assert (await client.get(url, auth=("x", "wrong"))).status_code == 401
    by_header = await client.get(url, headers={"X-API-Key": ADMIN})
    by_basic = await client.get(url, auth=BASIC)
    assert by_header.status_code == by_basic.status_code == 200
    assert by_header.text == by_basic.text


async def test_run_folder_redirects_to_its_index(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/admin/data-docs/{RUN}", auth=BASIC)
    assert r.status_code == 307 and r.headers["location"] == f"/admin/data-docs/{RUN}/"
    index = await client.get(f"/admin/data-docs/{RUN}/", auth=BASIC)
    assert index.status_code == 200 and "Validation Results" in index.text


async def test_index_loads_only_what_the_api_serves(client: httpx.AsyncClient,
                                                    data_dir: Path) -> None:
    page_url = f"http://t/admin/data-docs/{RUN}/index.html"
    r = await client.get(page_url, auth=BASIC)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    html = r.text
    loaded = _loaded(html)
    assert not [u for u in loaded if re.match(_EXTERNAL, u)], loaded
    # the only external URLs left are links a person may click (GE's docs), never loaded
    anchors = set(_ANCHOR.findall(html))
    assert {u for u in _ANY_URL.findall(html)} <= anchors
    for needed in ("/assets/jquery/jquery.min.js", "/assets/bootstrap/css/bootstrap.min.css",
                   "/assets/bootstrap/js/bootstrap.bundle.min.js",
                   "/assets/font-awesome/css/all.min.css",
                   "/assets/data-docs/bootstrap-table-lite.js"):
        assert needed in loaded, needed
    assert loaded.index("/assets/jquery/jquery.min.js") < \
        loaded.index("/assets/data-docs/bootstrap-table-lite.js")
    assert ".bootstrapTable(" in html and "integrity=" not in html
    for ref in {u for u in loaded if not u.startswith("data:")}:
        asset = await client.get(urljoin(page_url, ref), auth=BASIC)
        assert asset.status_code == 200, ref
    # the pages the index lists (suites and validation results) are served too
    for ref in {u for u in anchors if u.endswith(".html")} - {"#"}:
        assert (await client.get(urljoin(page_url, ref), auth=BASIC)).status_code == 200, ref
    assert "/admin/data-docs/" + RUN + "/static/images/logo-long.png" in loaded
    assert (_site(data_dir) / "static" / "images" / "logo-long.png").is_file()


async def test_every_page_of_the_site_loads_nothing_from_elsewhere(
        client: httpx.AsyncClient, data_dir: Path) -> None:
    site = _site(data_dir)
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 7  # index, 3 suites, 3 validation results
    for page in pages:
        rel = page.relative_to(site).as_posix()
        r = await client.get(f"/admin/data-docs/{RUN}/{rel}", auth=BASIC)
        assert r.status_code == 200, rel
        external = [u for u in _loaded(r.text) if re.match(_EXTERNAL, u)]
        assert not external, (rel, external)
        assert re.search(r"https?://(?:cdn|unpkg|code\.jquery|maxcdn|stackpath)", page.read_text())


async def test_files_are_served_as_they_are(client: httpx.AsyncClient, data_dir: Path) -> None:
    logo = _site(data_dir) / "static" / "images" / "logo-long.png"
    r = await client.get(f"/admin/data-docs/{RUN}/static/images/logo-long.png", auth=BASIC)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == logo.read_bytes()


# (clients and browsers resolve a literal ../ before sending; encoded ones reach the server)
@pytest.mark.parametrize("path", [
    "%2e%2e/report.json", "..%2freport.json", "%2e%2e%2f%2e%2e%2fvalidation",
    "%2Fetc%2Fpasswd", "static/%2e%2e/%2e%2e/report.json", "nothing.html", "static/images",
    "outside-link.json", "..%5creport.json",
])
async def test_nothing_outside_the_run_s_data_docs(client: httpx.AsyncClient, data_dir: Path,
                                                   path: str) -> None:
    link = _site(data_dir) / "outside-link.json"
    if not link.is_symlink():
        link.symlink_to(data_dir / "validation" / RUN / "report.json")
    assert (data_dir / "validation" / RUN / "report.json").is_file()  # a leak would be a 200
    r = await client.get(f"/admin/data-docs/{RUN}/{path}", auth=BASIC)
    assert r.status_code == 404, (path, r.text[:200])
    assert "report" not in r.text or "no Data Docs page" in r.text


@pytest.mark.parametrize("path", ["../report.json", "static/../../report.json", "/etc/passwd",
                                  "..\\report.json", "outside-link.json",
                                  "static/images", "a\x00.html"])
def test_resolve_refuses_paths_leaving_the_folder(data_dir: Path, path: str) -> None:
    link = _site(data_dir) / "outside-link.json"
    if not link.is_symlink():
        link.symlink_to(data_dir / "validation" / RUN / "report.json")
    with pytest.raises(NotFound):
        resolve(data_dir / "validation", RUN, path)
    assert resolve(data_dir / "validation", RUN, "") == _site(data_dir).resolve() / "index.html"


@pytest.mark.parametrize("run_id", ["..", "%2e%2e", ".hidden", "no-such-run"])
async def test_unknown_or_invalid_run_is_404(client: httpx.AsyncClient, run_id: str) -> None:
    r = await client.get(f"/admin/data-docs/{run_id}/index.html", auth=BASIC)
    assert r.status_code == 404


def test_localize_maps_cdn_assets_and_drops_the_rest(tmp_path: Path) -> None:
    (tmp_path / "static" / "images").mkdir(parents=True)
    (tmp_path / "static" / "images" / "logo-long.png").write_bytes(b"png")
    html = (
        '<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/'
        'bootstrap.min.css"/>'
        '<link rel="stylesheet" href="//cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1/a.css">'
        '<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>'
        '<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js" '
        'integrity="sha384-x" crossorigin="anonymous"></script>'
        '<script src="https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js">'
        '</script>'
        '<script src="https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/'
        'bootstrap-table-filter-control.min.js"></script>'
        '<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>'
        '<img class="x" src="https://s3.example.com/logo-long.png?d=1" alt="GE"/>'
        '<img src="https://s3.example.com/unknown.png">'
        "<style>.f { background: url('https://s3.example.com/full_logo_dark.png') 0 0; }</style>"
        '<a href="https://greatexpectations.io">GE</a><script>var a = 1;</script>'
    )
    out = localize_html(html, assets_url="/p/assets", site_url="/p/dd/r1/", site_dir=tmp_path)
    assert out == (
        '<link rel="stylesheet" href="/p/assets/bootstrap/css/bootstrap.min.css">'
        '<script src="/p/assets/jquery/jquery.min.js"></script>'
        '<script src="/p/assets/bootstrap/js/bootstrap.bundle.min.js"></script>'
        '<script src="/p/assets/data-docs/bootstrap-table-lite.js"></script>'
        '<img class="x" src="/p/dd/r1/static/images/logo-long.png" alt="GE"/>'
        "<style>.f { background: none 0 0; }</style>"
        '<a href="https://greatexpectations.io">GE</a><script>var a = 1;</script>'
    )


def test_link_is_http_on_the_public_url() -> None:
    assert data_docs_url(Settings(api_public_url="https://recs.example.com/api/"), RUN) == \
        f"https://recs.example.com/api/admin/data-docs/{RUN}/index.html"
    assert public_base_url(Settings(api_host="0.0.0.0", api_port=9000)) == \
        "http://127.0.0.1:9000"
    assert public_base_url(Settings(api_host="::", api_port=80)) == "http://[::1]:80"
    assert data_docs_url(Settings(), RUN, "validations/a b.html").startswith(
        "http://127.0.0.1:8000/admin/data-docs/")
    for bad in ("ftp://host", "recs.example.com", "http://", "https://host/ x"):
        with pytest.raises(ValidationError):
            Settings(api_public_url=bad)


def test_prefect_artifact_links_to_the_api(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, api_public_url="http://api.internal:8000")
    index = docs_dir(settings.validation_dir, RUN) / "index.html"
    report = ValidationReport(success=True, data_docs=str(index))
    assert _report_link(report, RUN, settings) == \
        f"http://api.internal:8000/admin/data-docs/{RUN}/index.html"
    assert _report_link(ValidationReport(success=True), RUN, settings) is None
