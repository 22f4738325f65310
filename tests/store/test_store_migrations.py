from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from assay.cli.main import main
from assay.errors import BadInput, Unavailable
from assay.store import open_store
from assay.store.migrate import head_revision
from assay.store.schema import Asset, AuditEntry, Base


def test_open_store_migrates_to_head_and_matches_the_orm(db_url):
    store = open_store(db_url)
    try:
        assert store.revision() == head_revision()
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], f"migrations and schema.py disagree: {diff}"
        # opening again is a no-op, not a second migration
        again = open_store(db_url)
        assert again.revision() == head_revision()
        again.close()
    finally:
        store.close()


def test_default_store_is_a_sqlite_file_under_assay_home(assay_home):
    store = open_store()
    try:
        assert store.dialect == "sqlite"
        assert (assay_home / "assay.db").is_file()
    finally:
        store.close()


def _asset(version: int = 1) -> Asset:
    return Asset(
        id=f"dataset:x@{version}", kind="dataset", namespace="assay", name="x", version=version,
        purposes=["research"], restrictions=[], spec={"schema": {"a": "int"}}, created_by="t",
    )


def test_session_commits_or_rolls_back_as_one_unit(db_url):
    store = open_store(db_url)
    try:
        with pytest.raises(RuntimeError), store.session() as s:
            s.add(_asset())
            s.add(AuditEntry(actor="t", role="admin", source="test", action="register", target="dataset:x@1"))
            s.flush()
            raise RuntimeError("boom after the rows were flushed")
        with store.session() as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Asset)) == 0
            assert s.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 0
        with store.session() as s:
            s.add(_asset())
        with store.session() as s:
            row = s.get(Asset, "dataset:x@1")
            assert row.purposes == ["research"] and row.spec == {"schema": {"a": "int"}}
            assert row.created_at is not None
    finally:
        store.close()


def test_asset_identity_is_unique(db_url):
    store = open_store(db_url)
    try:
        with store.session() as s:
            s.add(_asset())
        dup = _asset()
        dup.id = "other-id"
        with pytest.raises(sa.exc.IntegrityError), store.session() as s:
            s.add(dup)
    finally:
        store.close()


def test_db_cli_upgrade_and_current(db_url, capsys):
    assert main(["db", "current", "--url", db_url, "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert before["current"] is None and before["up_to_date"] is False
    assert main(["db", "upgrade", "--url", db_url, "--json"]) == 0
    up = json.loads(capsys.readouterr().out)
    assert up["to"] == head_revision()
    assert main(["db", "current", "--url", db_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["up_to_date"] is True


def test_bad_url_is_bad_input_and_unreachable_server_is_unavailable():
    with pytest.raises(BadInput):
        open_store("this is not a url")
    with pytest.raises(Unavailable):
        open_store("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")
