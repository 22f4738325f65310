"""assay's metadata store: SQLAlchemy 2 over SQLite (default) or PostgreSQL (``ASSAY_DB_URL``).

    from assay.store import open_store
    store = open_store()                 # SQLite file at settings().home / "assay.db"
    with store.session() as s:           # one transaction: commit on success, roll back on error
        s.add(...)

``open_store`` runs the Alembic migrations that ship inside the package, so a fresh file or a
fresh PostgreSQL database is ready to use; an already-current database costs one query.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from assay.config import settings
from assay.errors import BadInput, Unavailable
from assay.store import schema
from assay.store.schema import Base
from assay.store.values import Unstorable

__all__ = ["Base", "Store", "Unstorable", "open_store", "schema"]


@dataclass
class Store:
    """An engine on a migrated database plus a session factory."""

    url: str
    engine: sa.Engine
    _factory: sessionmaker[Session] = field(repr=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: commits when the block ends, rolls back everything if it raises."""
        session = self._factory()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def revision(self) -> str | None:
        from assay.store.migrate import current_revision

        return current_revision(self.engine)

    def close(self) -> None:
        self.engine.dispose()


def _on_sqlite_connect(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite gets foreign keys, WAL and a busy timeout; its folder is created."""
    try:
        parsed = sa.engine.make_url(url)
    except Exception as e:
        raise BadInput(f"not a database URL: {url!r} ({e})") from e
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            from pathlib import Path

            folder = Path(parsed.database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # under a file (ASSAY_HOME=/dev/null/x), or not writable
                raise BadInput(f"cannot create the folder {folder} of the SQLite database {url!r}: {e.strerror}",
                               hint="set ASSAY_HOME (or ASSAY_DB_URL) to a place this user may write") from None
        import orjson

        # orjson decodes the JSON columns several times faster than the standard library
        engine = sa.create_engine(url, connect_args={"timeout": 30}, json_deserializer=orjson.loads)
        sa.event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        # psycopg (3) is what assay[postgres] installs; prefer it when the URL names no driver.
        try:
            import psycopg  # noqa: F401

            parsed = parsed.set(drivername="postgresql+psycopg")
        except ImportError:
            pass
    try:
        engine = sa.create_engine(parsed, pool_pre_ping=True)
    except sa.exc.ArgumentError as e:  # NoSuchModuleError: a dialect SQLAlchemy does not know
        raise BadInput(f"not a database URL assay can use: {parsed.render_as_string(hide_password=True)!r} "
                       f"({str(e).splitlines()[0][:200]})", hint="use sqlite:///PATH or postgresql://...") from None
    except ImportError as e:
        raise Unavailable(
            f"the database driver for {parsed.get_backend_name()} is not installed ({e})",
            hint="pip install 'assay[postgres]'",
        ) from e
    sa.event.listen(engine, "do_connect", _connect_or_unavailable(engine.url.render_as_string(hide_password=True)))
    return engine


def _connect_or_unavailable(where: str):
    """A ``do_connect`` hook: a database server that cannot be reached is ``Unavailable`` (exit 3,
    one line naming the server) wherever the connection is first needed (``db current``, the
    migrations, a request), not a driver traceback."""

    def connect(dialect, _record, cargs, cparams):
        try:
            return dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise Unavailable(f"cannot reach the database at {where}: {reason}",
                              hint="is the server running, and do ASSAY_DB_URL / --url name it?") from None

    return connect


def open_store(url: str | None = None, *, migrate: bool = True) -> Store:
    """Open (and by default migrate to head) the store at ``url`` or the configured one."""
    url = url or settings().db_url
    engine = make_engine(url)
    if migrate:
        from assay.store.migrate import head_revision, upgrade

        try:
            with engine.connect() as conn:
                from alembic.runtime.migration import MigrationContext

                at = MigrationContext.configure(conn).get_current_revision()
        except sa.exc.OperationalError as e:  # SQLite: a file that cannot be opened (servers: _connect_or_unavailable)
            raise Unavailable(f"cannot reach the database at {engine.url.render_as_string(hide_password=True)}: {e.orig}") from e
        if at != head_revision():
            upgrade(engine)
    from assay.store.values import guard_session

    factory = sessionmaker(engine, expire_on_commit=False)
    guard_session(factory)  # nothing a store cannot give back is ever flushed (assay.store.values)
    return Store(url=url, engine=engine, _factory=factory)
