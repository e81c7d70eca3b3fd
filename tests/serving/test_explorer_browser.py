"""Headless Chromium against the API served by uvicorn: `/docs` renders its operations without
internet, and `/explorer?user=...` shows the user's top items as the API returns them.

Needs Debian's `chromium` (CI installs it); skips with the reason when it is not on PATH. The
screenshots are kept as test artifacts in `$TEST_ARTIFACTS_DIR` when set, else in
`<pytest tmp>/browser-artifacts/`; the test prints the folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recsys.mongo_server import free_port
from serving.store import MongoServingStore
from tests.conftest import REPO_ROOT
from tests.serving.catalogue_data import TOP, publish_catalogue

pytestmark = [pytest.mark.integration, pytest.mark.browser]

KEY = "browser-key"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
START_TIMEOUT_S = 60.0


@pytest.fixture
def browser() -> str:
    """The Chromium executable; skips the test (before any server starts) without one."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"no headless browser: none of {', '.join(CHROMIUM_NAMES)} is on PATH "
                "(Debian: apt-get install chromium chromium-driver)")


@pytest.fixture
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("TEST_ARTIFACTS_DIR")
    folder = Path(given) if given else tmp_path_factory.getbasetemp() / "browser-artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"browser artifacts: {folder}")
    return folder


@pytest.fixture
def server(browser: str, mongo_uri: str, db_name: str, db, store: MongoServingStore,
           tmp_path: Path) -> Iterator[str]:
    """The API under uvicorn (its own process, as `recsys serve` runs it) over the catalogue."""
    publish_catalogue(db, store, tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RECSYS_", "MONGODB_"))}
    env.update({
        "MONGODB_URI": mongo_uri, "MONGODB_DB": db_name,
        "RECSYS_DATA_DIR": str(tmp_path / "data"), "RECSYS_API_KEYS": KEY,
        "RECSYS_TOP_N": str(TOP), "RECSYS_SIMILAR_N": "5", "RECSYS_API_LOG_JSON": "false",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p),
    })
    log = (tmp_path / "uvicorn.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "serving.api.main:app_from_environment",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{url}/ready", headers={"X-API-Key": KEY}).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("uvicorn did not become ready:\n"
                            + (tmp_path / "uvicorn.log").read_text()[-3000:])
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def browse(browser: str, url: str, profile: Path, *extra: str) -> str:
    """Run headless Chromium on `url` with `extra` flags; its stdout. Every host but this
    machine is unresolvable, as without internet: a page that needs a CDN stays blank."""
    args = [browser, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000", *extra, url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_docs_and_explorer_in_chromium(browser: str, server: str, artifacts: Path,
                                       tmp_path: Path) -> None:
    profile = tmp_path / "chromium-profile"

    docs = browse(browser, f"{server}/docs", profile, "--dump-dom")
    (artifacts / "docs.html").write_text(docs)
    # Swagger UI rendered the operations in the browser (its assets are served by the app)
    assert 'class="swagger-ui' in docs
    rendered = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', docs))
    assert {"/users/{user_id}/recommendations", "/items", "/items/{item_id}",
            "/stats/overview", "/stats/categories", "/explorer"} <= rendered, sorted(rendered)
    browse(browser, f"{server}/docs", profile, f"--screenshot={artifacts / 'docs.png'}",
           "--window-size=1280,1600")

    recs = httpx.get(f"{server}/users/u0/recommendations", params={"k": TOP},
                     headers={"X-API-Key": KEY}).json()
    page_url = f"{server}/explorer?user=u0&key={KEY}"
    dom = browse(browser, page_url, profile, "--dump-dom")
    table = dom.split('id="recommendations"')[1].split("</section>")[0]
    listed = re.findall(r'class="item"[^>]*>([^<]+)</a>\s*</td>\s*<td>([^<]*)</td>', table)
    assert [item for item, _ in listed] == [it["item_id"] for it in recs["items"]]
    assert all(title == f"Title {item[1:]}" for item, title in listed)
    shot = artifacts / "explorer.png"
    browse(browser, page_url, profile, f"--screenshot={shot}", "--window-size=1280,1600")
    assert shot.stat().st_size > 10_000
    print(f"screenshots: {sorted(p.name for p in artifacts.glob('*.png'))}")
