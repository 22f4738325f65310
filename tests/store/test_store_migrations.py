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


def test_0002_keeps_existing_tokens_and_approvals_working(db_url):
    """A store made by 0001 with tokens, approvals and audit rows upgrades in place: every token
    gets a principal and an expiry, every approval its accountable principal, every audit row
    the outcome "ok"; and the upgrade can be undone."""
    from datetime import UTC, datetime, timedelta

    from assay.server.auth import authenticate, hash_token
    from assay.store import make_engine
    from assay.store.migrate import upgrade
    from assay.store.schema import ApiToken, Approval, Principal

    engine = make_engine(db_url)
    upgrade(engine, "0001")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO api_tokens (id, name, role, token_hash, created_at, created_by) VALUES "
                             "('t1', 'alice', 'approver', :h, :now, 'root'), ('t2', 'alice', 'viewer', :h2, :now, 'root')"),
                     {"h": hash_token("assay_alice"), "h2": hash_token("assay_alice2"), "now": now})
        conn.execute(sa.text("INSERT INTO approvals (subject_kind, subject_id, approver, role, comment, created_at) VALUES "
                             "('deployment', 'deployment:d@1', 'alice', 'approver', '', :now)"), {"now": now})
        conn.execute(sa.text("INSERT INTO audit_log (ts, actor, role, source, action, target, detail) VALUES "
                             "(:now, 'alice', 'approver', 'cli', 'approve_deployment', 'deployment:d@1', '{}')"), {"now": now})
    engine.dispose()
    store = open_store(db_url)
    try:
        with store.session() as s:
            assert [(p.name, p.kind) for p in s.scalars(sa.select(Principal))] == [("alice", "person")]
            expiry = s.get(ApiToken, "t1").expires_at
            expiry = expiry if expiry.tzinfo else expiry.replace(tzinfo=UTC)
            assert timedelta(days=89) < expiry - now < timedelta(days=91)
            assert s.scalar(sa.select(Approval.accountable)) == "alice"
            assert s.scalar(sa.select(AuditEntry.outcome)) == "ok"
        actor = authenticate(store, "assay_alice")
        assert (actor.name, actor.role, actor.kind, actor.delegated_by) == ("alice", "approver", "person", None)
        with pytest.raises(sa.exc.IntegrityError), store.session() as s:  # one approval per accountable principal
            s.add(Approval(subject_kind="deployment", subject_id="deployment:d@1", approver="bob", accountable="alice",
                           role="approver", comment=""))
    finally:
        store.close()
    engine = make_engine(db_url)
    with engine.begin() as conn:
        from alembic import command

        from assay.store.migrate import alembic_config

        command.downgrade(alembic_config(conn), "0001")
    with engine.connect() as conn:
        assert "principals" not in sa.inspect(conn).get_table_names()
        assert conn.execute(sa.text("SELECT count(*) FROM api_tokens")).scalar() == 2
    engine.dispose()


def test_the_store_refuses_what_it_could_not_give_back(db_url):
    """The flush guard (assay.store.values) holds both stores to the same values, whatever the
    caller: NaN, lone surrogates, NUL, too-deep documents, over-long strings."""
    from assay.store.values import Unstorable

    store = open_store(db_url)
    try:
        for spec in ({"m": float("nan")}, {"m": float("inf")}, {"s": "\ud800"}, {"s": "a\x00"}, {"big": 2**70},
                     {"deep": _deep(70)}, {1: "non-string key"}):
            bad = _asset()
            bad.spec = spec
            with pytest.raises(Unstorable), store.session() as s:
                s.add(bad)
        long = _asset()
        long.owner = "x" * 256  # VARCHAR(255): PostgreSQL refuses it, SQLite would not
        with pytest.raises(Unstorable, match=r"assets\.owner"), store.session() as s:
            s.add(long)
        with store.session() as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Asset)) == 0
            ok = _asset()
            ok.spec = {"deep": _deep(60), "n": 2**62, "f": 1.5, "s": "é\n\t"}
            s.add(ok)
        with store.session() as s:
            assert s.get(Asset, "dataset:x@1").spec["n"] == 2**62
    finally:
        store.close()


def _deep(depth: int) -> dict:
    doc: dict = {}
    for _ in range(depth - 1):
        doc = {"a": doc}
    return doc
