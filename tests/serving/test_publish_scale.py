"""Publish timing at a realistic size (run with `-m slow`)."""

from __future__ import annotations

import logging

import pytest
from pymongo.database import Database

from serving.version_writer import write_payload_version
from tests.serving.payloads import make_payload

logger = logging.getLogger(__name__)


@pytest.mark.slow
@pytest.mark.integration
def test_publish_5000_users_top50(db: Database) -> None:
    payload = make_payload("big", n_users=5000, n_items=2000, top_n=50)
    summary = write_payload_version(db, payload)
    logger.warning("publish 5000 users x top-50 (+2000 items): %.2fs", summary["seconds"])
    assert summary["counts"]["users"] == 5000
    assert summary["seconds"] < 120
