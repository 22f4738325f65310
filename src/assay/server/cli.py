"""``assay server`` (uvicorn) and ``assay token create|revoke``."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("server")
    def server(
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
        port: int = typer.Option(8750, "--port", help="Port to listen on."),
        db_url: str = typer.Option(None, "--db-url", help="Database URL (default: ASSAY_DB_URL or the SQLite file)."),
    ) -> None:
        """Run the HTTP control plane (OpenAPI at /docs, metrics at /metrics)."""
        import uvicorn

        from assay.server.app import create_app

        uvicorn.run(create_app(db_url=db_url), host=host, port=port, log_level="info")

    token = typer.Typer(help="API tokens for the control plane (stored hashed).", no_args_is_help=True)

    @token.command("create")
    def create(
        name: str = typer.Option(..., "--name", help="Who the token is for."),
        role: str = typer.Option(..., "--role", help="viewer, engineer, approver or admin."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Create a token; the secret is printed once and only its hash is kept."""
        from assay.govern.registry import local_actor
        from assay.server.auth import create_token
        from assay.store import open_store

        out = create_token(open_store(), local_actor(), name=name, role=role)
        typer.echo(json.dumps(out) if as_json else f"token for {name} ({role}), shown once:\n{out['token']}")

    @token.command("revoke")
    def revoke(token_id: str = typer.Argument(..., help="The token id printed by `token create --json`.")) -> None:
        """Revoke a token."""
        from assay.govern.registry import local_actor
        from assay.server.auth import revoke_token
        from assay.store import open_store

        revoke_token(open_store(), local_actor(), token_id)
        typer.echo(f"revoked {token_id}")

    app.add_typer(token, name="token")
