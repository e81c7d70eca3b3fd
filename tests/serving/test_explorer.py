"""`GET /explorer`: the HTML page against the API's own answers, on a real secantusd-py over a
real feature snapshot (tests/serving/catalogue_data.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from recsys.settings import Settings
from serving.api.explorer import compare_lists
from serving.api.main import create_app
from serving.store import MongoServingStore
from serving.version_writer import write_payload_version
from tests.serving.catalogue_data import TOP, publish_catalogue
from tests.serving.payloads import item_genres, make_payload

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

KEY = "explorer-key"


class Sections(HTMLParser):
    """Text of each `<section id=...>` and every link target of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.links: list[str] = []
        self.assets: list[str] = []
        self._section: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section":
            self._section = values.get("id")
            self.text[self._section or ""] = ""
        self.handle_data(" ")  # cells and tags are separated by blanks in the text
        if tag == "a" and values.get("href"):
            self.links.append(values["href"] or "")
        if tag in ("link", "script") and (values.get("href") or values.get("src")):
            self.assets.append(values.get("href") or values.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        self.handle_data(" ")
        if tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._section is not None:
            self.text[self._section] += data


def parse(html: str) -> Sections:
    page = Sections()
    page.feed(html)
    for name, text in page.text.items():
        page.text[name] = re.sub(r"\s+", " ", text)
    return page


@pytest.fixture
def settings(mongo_uri: str, db_name: str, tmp_path: Path) -> Settings:
    return Settings(mongodb_uri=mongo_uri, mongodb_db=db_name, data_dir=tmp_path, top_n=TOP,
                    similar_n=5, api_keys=KEY, api_log_json=False, mongodb_timeout_ms=3000)


@pytest.fixture
def api(settings: Settings):
    @asynccontextmanager
    async def open_client() -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings)
        async with LifespanManager(app) as manager:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app),
                                         base_url="http://test") as client:
                yield client
    return open_client


@pytest.fixture
def catalogue(db, store: MongoServingStore, tmp_path: Path):
    return publish_catalogue(db, store, tmp_path)


async def page(client: httpx.AsyncClient, **params: str) -> httpx.Response:
    return await client.get("/explorer", params={"key": KEY, **params})


async def test_user_page_shows_what_the_api_returns(api, catalogue) -> None:
    async with api() as client:
        r = await page(client, user="u0")
        recs = (await client.get("/users/u0/recommendations",
                                 params={"k": TOP, "explain": "true"},
                                 headers={"X-API-Key": KEY})).json()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "no-referrer"
    text = parse(r.text).text["recommendations"]
    rows = re.findall(r"(\d+) (i\d+) (Title \d+) ([A-Za-z, ]+) (\d\.\d{3})", text)
    want = [(str(it["rank"]), it["item_id"], f"Title {it['item_id'][1:]}",
             ", ".join(item_genres(int(it["item_id"][1:]))), f"{it['score']:.3f}")
            for it in recs["items"]]
    assert [tuple(x.strip() for x in row) for row in rows] == want
    for it in recs["items"]:  # the "because you liked" items, with titles and contributions
        for because in it["because"]:
            assert f"{because['item_id']} Title {because['item_id'][1:]} " \
                   f"({because['contribution']:.2f})" in text


async def test_history_and_profile_come_from_the_online_features(api, catalogue) -> None:
    async with api() as client:
        text = parse((await page(client, user="u2")).text).text["history"]
    # u2's events: i2, i3, i4, i5, one hour apart -> newest first
    assert re.findall(r"\d (i\d) Title", text) == ["i5", "i4", "i3", "i2"]
    assert "2024-03-03 03:00 UTC" in text and "events 4" in text


async def test_version_switcher_shows_what_changed(api, catalogue) -> None:
    async with api() as client:
        r = await page(client, user="u0")
        again = await page(client, user="u0", compare="v1")
        unknown = await page(client, user="u0", compare="v9")
    sections = parse(r.text).text
    versions, changes = sections["versions"], sections["changes"]
    assert "active: v2" in versions and "compared: v1" in versions
    assert "als.ndcg@10 0.31 0.25 +0.0600" in versions
    assert "als.recall@10 0.2 0.21 -0.0100" in versions
    assert "timings" not in versions
    assert "75.0% of the list was already there" in changes
    gained, lost, moved = changes.split("gained")[1], changes.split("lost")[1], \
        changes.split("moved")[1]
    assert "4 i3 Title 3" in gained.split("lost")[0]
    assert "1 i4 Title 4" in lost.split("moved")[0]
    assert re.findall(r"(\d) (\d) (i\d) Title \d ([+-]\d)", moved) == [
        ("3", "1", "i0", "+2"), ("4", "2", "i1", "+2"), ("2", "3", "i2", "-1")]
    assert parse(again.text).text["changes"] == changes
    assert "v9 is not a kept, ready version" in unknown.text


async def test_similar_items_of_a_chosen_item(api, catalogue) -> None:
    async with api() as client:
        r = await page(client, user="u0", item="i2")
        sim = (await client.get("/items/i2/similar", params={"k": TOP},
                                headers={"X-API-Key": KEY})).json()
        fewer = await page(client, item="i2", k="2")
        too_many = await page(client, item="i2", k=str(TOP + 1))
        missing = await page(client, item="nope")
    text = parse(r.text).text["similar"]
    assert "Items similar to i2 Title 2" in text
    assert re.findall(r"\d (i\d) Title", text) == [it["item_id"] for it in sim["items"]]
    assert re.findall(r"\d (i\d) Title", parse(fewer.text).text["similar"]) == ["i3", "i4"]
    assert too_many.status_code == 422
    assert missing.status_code == 200
    assert "item 'nope' is unknown to model version v2" in parse(missing.text).text["similar"]


async def test_links_keep_the_key_and_the_user(api, catalogue) -> None:
    async with api() as client:
        r = await page(client, user="u0")
        start = await page(client)
        assets = [await client.get(path) for path in parse(r.text).assets]
    links = [link for link in parse(r.text).links if link.startswith("/explorer?")]
    assert links and all(f"key={KEY}" in link and "user=u0" in link for link in links)
    assert [a.status_code for a in assets] == [200, 200]  # CSS and JS, local, no key needed
    assert {a.headers["content-type"].split(";")[0] for a in assets} == {
        "text/css", "text/javascript"}
    assert not re.search(r"(src|href)=\"(https?:)?//", r.text)  # nothing from elsewhere
    start_links = parse(start.text).links
    assert f"/explorer?user=u0&key={KEY}" in start_links  # sample users on the start page


async def test_the_page_needs_the_key(api, catalogue) -> None:
    async with api() as client:
        none = await client.get("/explorer", params={"user": "u0"})
        wrong = await client.get("/explorer", params={"user": "u0", "key": "nope"})
        header = await client.get("/explorer", params={"user": "u0"},
                                  headers={"X-API-Key": KEY})
    assert none.status_code == 401 and wrong.status_code == 401
    assert header.status_code == 200
    assert "Recommendations for u0" in parse(header.text).text["recommendations"]


async def test_every_value_is_escaped(api, catalogue) -> None:
    evil = '<script>alert(1)</script>"\'&'
    async with api() as client:
        r = await page(client, user=evil, item=evil, compare='"><img src=x onerror=alert(1)>')
    assert r.status_code == 200
    assert "<script>alert" not in r.text and "<img src=x" not in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert "is unknown to v2: the API answers with the popular list" in r.text


async def test_user_unknown_to_the_model_gets_the_popular_list(api, catalogue) -> None:
    async with api() as client:
        r = await page(client, user="stranger")
    sections = parse(r.text).text
    assert "stranger is unknown to v2" in sections["recommendations"]
    assert "gets the popular list" in sections["changes"]
    assert "not in the online feature store" in sections["history"]


async def test_without_online_features_or_previous_version(api, store: MongoServingStore) -> None:
    write_payload_version(store.db, make_payload("v1", attributes=True))
    store.activate("v1")
    async with api() as client:
        r = await page(client, user="u1")
    sections = parse(r.text).text
    assert r.status_code == 200 and "compared: none" in sections["versions"]
    assert "online features: none" in r.text
    assert "u1 is not in the online feature store (no snapshot is online)" in sections["history"]
    assert "Comedy" in sections["recommendations"] or "Drama" in sections["recommendations"]


def test_compare_lists_known_answer() -> None:
    now = [{"item_id": i, "rank": r} for r, i in enumerate(["a", "b", "c", "d"], 1)]
    before = [{"item_id": i, "rank": r} for r, i in enumerate(["e", "c", "b", "d"], 1)]
    assert compare_lists(now, before) == {
        "gained": [{"item_id": "a", "rank": 1}], "lost": [{"item_id": "e", "rank": 1}],
        "moved": [{"item_id": "b", "before": 3, "after": 2, "delta": 1},
                  {"item_id": "c", "before": 2, "after": 3, "delta": -1}],
        "unchanged": 1, "overlap": 0.75}
