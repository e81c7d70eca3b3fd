"""Settings refuse unknown keys and explain wrong values in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.errors import SettingsError
from recsys.settings import Settings, known_environment_names, load_settings


def test_misspelt_environment_variable_is_refused_with_a_suggestion(monkeypatch):
    monkeypatch.setenv("RECSYS_TOPN", "5")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        "invalid settings: RECSYS_TOPN is not a setting (did you mean RECSYS_TOP_N?)")


def test_misspelt_dotenv_key_is_refused_but_other_tools_keys_are_kept(monkeypatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PREFECT_API_URL=http://x/api\nMONGODB_DB=from_dotenv\n")
    assert load_settings().mongodb_db == "from_dotenv"
    (tmp_path / ".env").write_text("RECSYS_ITERATONS=3\n")
    with pytest.raises(SettingsError, match="RECSYS_ITERATONS is not a setting"):
        load_settings()


def test_invalid_values_are_one_line_naming_variable_and_rule(monkeypatch):
    monkeypatch.setenv("RECSYS_GATE_MARGIN", "-1")
    monkeypatch.setenv("RECSYS_API_RATE_LIMIT_BURST", "abc")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert "RECSYS_GATE_MARGIN=-1: Input should be greater than or equal to 0" in message
    assert "RECSYS_API_RATE_LIMIT_BURST=abc: Input should be a valid integer" in message


def test_unknown_keyword_is_refused_in_code():
    with pytest.raises(SettingsError, match="RECSYS_TOPN is not a setting"):
        load_settings(topn=3)


def test_user_facing_names_are_the_documented_ones(monkeypatch):
    names = known_environment_names()
    assert {"MONGODB_URI", "MONGODB_DB", "RECSYS_DATA_DIR", "RECSYS_TOP_N",
            "RECSYS_PROJECT_DIR"} <= names
    monkeypatch.setenv("MONGODB_URI", "mongodb://example:1")
    monkeypatch.setenv("RECSYS_TOP_N", "7")
    settings = Settings()
    assert (settings.mongodb_uri, settings.top_n) == ("mongodb://example:1", 7)
