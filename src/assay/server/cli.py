"""``assay server`` (uvicorn) and ``assay token create|revoke``."""

from __future__ import annotations

import typer

from assay.files import dumps_json


def register(app: typer.Typer) -> None:
    @app.command("server")
    def server(
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
        port: int = typer.Option(8750, "--port", help="Port to listen on."),
        db_url: str = typer.Option(None, "--db-url", help="Database URL (default: ASSAY_DB_URL or the SQLite file)."),
        stop_within: float = typer.Option(10.0, "--stop-within", min=1.0, max=600.0,
                                          help="Seconds from SIGTERM/SIGINT to exit, whatever a request is doing."),
        trusted_proxies: str = typer.Option(None, "--trusted-proxies", envvar="ASSAY_TRUSTED_PROXIES",
                                            help="Proxies (addresses or CIDR blocks) whose X-Forwarded-For is believed."),
    ) -> None:
        """Run the HTTP control plane (OpenAPI at /docs, metrics at /metrics)."""
        from assay.server.app import create_app

        serve(create_app(db_url=db_url, trusted=trusted_proxies), host=host, port=port, stop_within=stop_within)

    token = typer.Typer(help="API tokens for the control plane (stored hashed).", no_args_is_help=True)

    @token.command("create")
    def create(
        name: str = typer.Option(..., "--name", help="The principal (person or service) the token is for."),
        role: str = typer.Option(..., "--role", help="viewer, engineer, approver or admin."),
        kind: str = typer.Option("person", "--kind", help="person (may approve) or service (may not)."),
        expires_in_days: int = typer.Option(None, "--expires-in-days",
                                            help="Days until it expires (default ASSAY_TOKEN_TTL_DAYS or 90; at most 365)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Create a token; the secret is printed once and only its hash is kept."""
        from assay.govern.registry import local_actor
        from assay.server.auth import create_token
        from assay.store import open_store

        out = create_token(open_store(), local_actor(), name=name, role=role, kind=kind, expires_in_days=expires_in_days)
        typer.echo(dumps_json(out) if as_json else
                   f"token for {name} ({kind}, {role}, expires {out['expires_at']}), shown once:\n{out['token']}")

    @token.command("revoke")
    def revoke(token_id: str = typer.Argument(..., help="The token id printed by `token create --json`.")) -> None:
        """Revoke a token."""
        from assay.govern.registry import local_actor
        from assay.server.auth import revoke_token
        from assay.store import open_store

        revoke_token(open_store(), local_actor(), token_id)
        typer.echo(f"revoked {token_id}")

    @token.command("list")
    def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """Every token (never the secrets): principal, role, expiry, who minted it, revocation."""
        from assay.govern.registry import local_actor
        from assay.server.auth import list_tokens
        from assay.store import open_store

        rows = list_tokens(open_store(), local_actor())
        typer.echo(dumps_json(rows, indent=2) if as_json else "\n".join(
            f"{r['id']}  {r['name']:20s} {r['kind']:8s} {r['role']:9s} expires {r['expires_at']}"
            + (f"  delegated by {r['delegated_by']}" if r["delegated_by"] else "")
            + (f"  REVOKED {r['revoked_at']}" if r["revoked_at"] else "") for r in rows) or "(no tokens)")

    app.add_typer(token, name="token")


def serve(app, *, host: str, port: int, stop_within: float = 10.0) -> None:
    """Run ``app`` under uvicorn, stopping within ``stop_within`` seconds of SIGTERM or SIGINT.

    uvicorn first drains requests for most of that time; if a handler still holds the process
    (a long computation in the event loop, a thread that will not finish), a watchdog in C
    (``faulthandler``, which needs no Python code to run) prints every thread's stack and ends
    the process at the deadline. X-Forwarded-For is not read by uvicorn: the app decides which
    proxies to believe (``ASSAY_TRUSTED_PROXIES``)."""
    import faulthandler
    import sys

    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if not self.should_exit:
                faulthandler.dump_traceback_later(stop_within, exit=True, file=sys.stderr)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_level="info", proxy_headers=False,
                            timeout_graceful_shutdown=max(1, int(stop_within * 0.7)))
    Server(config).run()
