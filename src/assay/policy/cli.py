"""``assay policy ...``: check, test, hash, sign, verify and diff policy bundles."""

from __future__ import annotations

from pathlib import Path

import typer

from assay.errors import EXIT_FAILED
from assay.files import dumps_json


def register(app: typer.Typer) -> None:
    policy = typer.Typer(help="Policy bundles: YAML with CEL conditions for rules, gates, purposes and alerts.", no_args_is_help=True)
    app.add_typer(policy, name="policy")

    def _load(path: Path, pubkey: Path | None = None, require_signed: bool | None = None):
        from assay.policy import load_bundle

        return load_bundle(path, public_key=pubkey, require_signature=require_signed)

    @policy.command("check")
    def check(
        path: Path = typer.Argument(..., help="A bundle: one .yaml file or a folder of them."),
        pubkey: Path = typer.Option(None, "--pubkey", help="Verify the bundle's signature with this Ed25519 public key."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    ) -> None:
        """Load, validate and type-check a bundle; compile every surface's rules for serving.

        Exit 0 when it is valid; exit 2 with file:line:column when it is not.
        """
        b = _load(path, pubkey)
        summary = {
            "bundle": b.name, "version": b.version, "hash": b.hash, "rules": len(b.rules), "gates": len(b.gates),
            "purposes": len(b.purposes), "alerts": len(b.alerts), "tests": len(b.tests), "surfaces": sorted(b.surfaces()),
        }
        if as_json:
            typer.echo(dumps_json(summary, indent=2))
        else:
            typer.echo(f"ok: {b.name} {b.version} ({b.short_hash}): {len(b.rules)} rules, {len(b.gates)} gates, "
                       f"{len(b.purposes)} purposes, {len(b.alerts)} alerts, {len(b.tests)} tests")

    @policy.command("test")
    def test(
        path: Path = typer.Argument(..., help="A bundle with a tests: section."),
        as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
    ) -> None:
        """Run the bundle's own test cases (like `opa test`); rule cases run through both evaluators."""
        from rich.console import Console

        from assay.policy.testing import run_tests

        b = _load(path)
        results = run_tests(b)
        failed = [r for r in results if not r.passed]
        if as_json:
            typer.echo(dumps_json({"bundle": b.name, "hash": b.hash, "passed": len(results) - len(failed), "failed": len(failed),
                                   "cases": [{"name": r.case.name, "location": str(r.case.location), "passed": r.passed,
                                              "problems": r.problems, "got": r.got} for r in results]}, indent=2, default=str))
        else:
            console = Console()
            for r in results:
                mark = "[green]PASS[/]" if r.passed else "[red]FAIL[/]"
                console.print(f"{mark} {r.case.name}", highlight=False)
                for p in r.problems:
                    console.print(f"     {r.case.location}: {p}", highlight=False)
            console.print(f"{len(results) - len(failed)} passed, {len(failed)} failed", highlight=False)
        if failed:
            raise typer.Exit(EXIT_FAILED)

    @policy.command("hash")
    def hash_(path: Path = typer.Argument(..., help="A bundle.")) -> None:
        """Print the bundle's content hash (sha256 of its canonical form)."""
        typer.echo(_load(path).hash)

    @policy.command("keygen")
    def keygen(
        private: Path = typer.Option(..., "--private", help="Where to write the private key (PEM, mode 600)."),
        public: Path = typer.Option(..., "--public", help="Where to write the public key (PEM)."),
    ) -> None:
        """Create an Ed25519 key pair for signing bundles."""
        from assay.policy.signing import generate_keypair

        typer.echo(f"key id {generate_keypair(private, public)}")

    @policy.command("sign")
    def sign(
        path: Path = typer.Argument(..., help="A bundle."),
        key: Path = typer.Option(..., "--key", help="Ed25519 private key (PEM)."),
    ) -> None:
        """Sign the bundle's content hash; writes <file>.sig or <folder>/bundle.sig."""
        from assay.policy.signing import sign_bundle

        b = _load(path, require_signed=False)
        out = sign_bundle(b, key)
        typer.echo(f"signed {b.name} {b.short_hash} -> {out}")

    @policy.command("verify")
    def verify(
        path: Path = typer.Argument(..., help="A signed bundle."),
        pubkey: Path = typer.Option(..., "--pubkey", help="Ed25519 public key (PEM)."),
    ) -> None:
        """Verify the bundle's signature; exit 2 if it is unsigned, tampered or forged."""
        b = _load(path, pubkey, require_signed=True)
        typer.echo(f"ok: {b.name} {b.short_hash} signature valid")

    @policy.command("diff")
    def diff_(
        old: Path = typer.Argument(..., help="The old bundle."),
        new: Path = typer.Argument(..., help="The new bundle."),
        as_json: bool = typer.Option(False, "--json", help="Print the diff as JSON."),
    ) -> None:
        """What changed between two bundles, entry by entry (exit 1 when they differ)."""
        from assay.policy import diff

        d = diff(_load(old), _load(new))
        if as_json:
            typer.echo(dumps_json(d.to_dict(), indent=2, default=str))
        else:
            typer.echo(f"{d.old_hash[:12]} -> {d.new_hash[:12]}")
            for key, (a, b) in d.meta.items():
                typer.echo(f"~ {key}: {a!r} -> {b!r}")
            for section, ids in d.removed.items():
                for i in ids:
                    typer.echo(f"- {section}/{i}")
            for section, ids in d.added.items():
                for i in ids:
                    typer.echo(f"+ {section}/{i}")
            for section, items in d.changed.items():
                for i, fields in items.items():
                    for f, (a, b) in fields.items():
                        typer.echo(f"~ {section}/{i}.{f}: {a!r} -> {b!r}")
            for section in d.reordered:
                typer.echo(f"~ {section}: order changed (first match wins, so this changes behaviour)")
            for section, attrs in d.attributes.items():
                for name, (a, b) in attrs.items():
                    typer.echo(f"~ attributes.{section}.{name}: {a} -> {b}")
            if d.empty:
                typer.echo("no changes")
        if not d.empty:
            raise typer.Exit(EXIT_FAILED)
