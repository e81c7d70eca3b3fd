"""Values from a batch shown to people: shortened, and escaped for Markdown and HTML.

A batch is untrusted input, and its values leave the pipeline as text in error messages, the
validation reports (``report.json``, ``report.md``), GE Data Docs and Prefect artifacts. Every
one of those places goes through this module, so one rule holds everywhere:

- `short_text` / `short_value`: a text value longer than `MAX_VALUE_CHARS` characters is cut
  there and says how much was left out; lists keep at most `MAX_LIST_ITEMS` entries. A 200 MB
  field becomes a few hundred characters, once, wherever it is shown.
- `md_text`: shortened text safe inside Markdown (and a Markdown table cell): ``<``, ``>`` and
  ``&`` become HTML entities, ``\\``, backticks, ``[``, ``]`` and ``|`` are backslash-escaped,
  line breaks become spaces. `md_code` is for the project's own names (rules, columns).
- `html_value`: shortened values with every text HTML-escaped, for renderers that insert values
  into HTML as they are (GE Data Docs tables).
"""

from __future__ import annotations

import html
import re
from typing import Any

# Characters of a sample value shown; enough to recognise it, small enough to log.
MAX_VALUE_CHARS = 200
# Entries of a list shown (samples are 10 values; GE's complete results can list millions).
MAX_LIST_ITEMS = 100

_MD_SPECIAL = re.compile(r"([\\`\[\]|])")
_LINE_BREAKS = re.compile(r"[\r\n]+")


def short_text(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """`value` as text of at most about `limit` characters (longer text is cut and says by
    how much)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def short_value(value: Any, limit: int = MAX_VALUE_CHARS) -> Any:
    """`value` with every text in it shortened (`short_text`) and every list cut to
    `MAX_LIST_ITEMS` entries; numbers, booleans and None stay as they are. Containers are
    walked (dict keys included); other objects are left alone."""
    if isinstance(value, str):
        return short_text(value, limit)
    if isinstance(value, bytes):
        return short_text(value[:limit * 4].decode("utf-8", errors="replace"), limit)
    if isinstance(value, dict):
        return {short_value(k, limit): short_value(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [short_value(v, limit) for v in value[:MAX_LIST_ITEMS]]
        if len(value) > MAX_LIST_ITEMS:
            items.append(f"... [{len(value) - MAX_LIST_ITEMS} more]")
        return items if isinstance(value, list) else tuple(items)
    return value


def md_text(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """Shortened `value` as Markdown text that renders as exactly that text (no HTML, links,
    code spans or table cells can be opened from it)."""
    text = _LINE_BREAKS.sub(" ", short_text("" if value is None else value, limit))
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def md_code(value: Any) -> str:
    """A name of the project's own (rule, column, expectation, run id) as a Markdown code span;
    backticks, ``|`` and line breaks cannot break out of it."""
    text = _LINE_BREAKS.sub(" ", short_text("" if value is None else value))
    text = text.replace("`", "'").replace("|", "\\|")
    return f"`{text}`"


def html_value(value: Any, limit: int = MAX_VALUE_CHARS) -> Any:
    """`short_value` of `value` with every text HTML-escaped (dict keys included)."""
    return _escape_texts(short_value(value, limit))


def _escape_texts(value: Any) -> Any:
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, dict):
        return {_escape_texts(k): _escape_texts(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_escape_texts(v) for v in value)
    return value
