"""``assay db upgrade|current``: the store's migrations by hand (``open_store`` also runs them)."""

from __future__ import annotations

import typer

from assay.files import dumps_json


def register(app: typer.Typer) -> None:
    db = typer.Typer(help="The metadata store (SQLite by default, PostgreSQL via ASSAY_DB_URL).", no_args_is_help=True)

    @db.command("upgrade")
    def upgrade_cmd(
        url: str = typer.Option(None, "--url", help="Database URL (default: ASSAY_DB_URL or the SQLite file under ASSAY_HOME)."),
        revision: str = typer.Option("head", "--revision", help="Target revision."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Apply the migrations that ship with assay."""
        from assay.config import settings
        from assay.store import make_engine
        from assay.store.migrate import current_revision, upgrade

        target = url or settings().db_url
        engine = make_engine(target)
        before = current_revision(engine)
        after = upgrade(engine, revision)
        engine.dispose()
        out = {"url": engine.url.render_as_string(hide_password=True), "from": before, "to": after}
        typer.echo(dumps_json(out) if as_json else f"{out['url']}: {before or '(empty)'} -> {after}")

    @db.command("current")
    def current_cmd(
        url: str = typer.Option(None, "--url", help="Database URL."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Print the revision the database is at and the newest one assay ships."""
        from assay.config import settings
        from assay.store import make_engine
        from assay.store.migrate import current_revision, head_revision

        engine = make_engine(url or settings().db_url)
        out = {
            "url": engine.url.render_as_string(hide_password=True),
            "current": current_revision(engine),
            "head": head_revision(),
        }
        engine.dispose()
        out["up_to_date"] = out["current"] == out["head"]
        typer.echo(dumps_json(out) if as_json else f"{out['url']}: at {out['current'] or '(empty)'}, head {out['head']}")

    app.add_typer(db, name="db")
