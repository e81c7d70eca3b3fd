"""Regression (issue 13): stored XSS in Data Docs. An item_id of ``<script>alert(3)</script>``
in a failing batch appeared unescaped inside a ``<td>`` of the validation result page; the
Markdown report (also the Prefect artifact) carried it raw as well."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.sanitize import html_value, md_code, md_text
from ingest.stage import ingest_batch
from recsys.errors import ValidationFailed
from recsys.settings import Settings

from .conftest import INTERACTIONS_CSV, write_batch

SCRIPT = "<script>alert(3)</script>"


def test_values_from_a_batch_reach_no_page_as_markup(tmp_path: Path) -> None:
    root = write_batch(
        tmp_path / "b",
        users="user_id,occupation\n007,<img src=x onerror=alert(1)>\n008,x\n009,y\n",
        interactions=INTERACTIONS_CSV + f"007,{SCRIPT},881250949,4\n"
                                        "008,1,`</td><script>alert(4)</script>|,5\n")
    settings = Settings(data_dir=tmp_path / "data")
    seen = []

    with pytest.raises(ValidationFailed) as info:
        ingest_batch(root, run_id="xss", settings=settings, on_report=seen.append)

    assert {f["rule"] for f in info.value.failures} == {"item_id_known",
                                                        "timestamp_parseable"}
    pages = {p: p.read_text(errors="replace")
             for folder in (settings.validation_dir / "xss", settings.quarantine_dir / "xss")
             for p in folder.rglob("*") if p.suffix in (".html", ".md")}
    docs = [p for p in pages if p.suffix == ".html" and "interactions" in p.name]
    assert docs, sorted(pages)  # the validation result page was built
    for path, text in pages.items():
        for raw in ("<script>alert(", "<img src=x", "</td><script>"):
            assert raw not in text, (path, raw)
    # Escaped, not dropped: the page still shows the value.
    assert any("&lt;script&gt;alert(3)&lt;/script&gt;" in pages[p] for p in docs)
    artifact = seen[0].to_markdown()  # what the flow publishes as its Prefect artifact
    assert "<script>" not in artifact and "&lt;script&gt;alert(3)" in artifact
    # The JSON report keeps the value as data (JSON is not markup).
    report = json.loads((settings.validation_dir / "xss" / "report.json").read_text())
    samples = [v for f in report["failures"] for v in f["sample"]]
    assert SCRIPT in samples


def test_markdown_and_html_escaping() -> None:
    assert md_text("<b>|`x`|</b> [a](javascript:1) & \\") == (
        "&lt;b&gt;\\|\\`x\\`\\|&lt;/b&gt; \\[a\\](javascript:1) &amp; \\\\")
    assert md_text("line\nbreak\r\nend") == "line break end"
    assert md_code("a`b|c") == "`a'b\\|c`"
    assert html_value({"<k>": ["<v>", 1, None]}) == {"&lt;k&gt;": ["&lt;v&gt;", 1, None]}
