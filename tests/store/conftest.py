"""The store's tests run against SQLite and the machine's real PostgreSQL."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, assay_home) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{assay_home / 'assay.db'}"
    return request.getfixturevalue("pg_url")
