"""Governance tests: a store on SQLite and on the machine's real PostgreSQL, a policy bundle,
and small real files to register."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.govern.registry import Actor
from assay.store import open_store

BUNDLE = Path(__file__).resolve().parents[2] / "src" / "assay" / "govern" / "default_bundle.yaml"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, assay_home):
    url = f"sqlite:///{assay_home / 'assay.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = open_store(url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(assay_home):
    s = open_store()
    yield s
    s.close()


@pytest.fixture
def bundle_path() -> Path:
    return BUNDLE


@pytest.fixture
def engineer() -> Actor:
    return Actor("erin", "engineer", "test")


@pytest.fixture
def files(tmp_path):
    def make(name: str, content: bytes) -> Path:
        p = tmp_path / "files" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        return p

    return make
