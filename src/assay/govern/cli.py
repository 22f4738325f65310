"""``assay register``, ``assay lineage``, ``assay deploy``, ``assay bom``, ``assay transformation``.

Who acts: with ``--token`` (or ``ASSAY_TOKEN``) the token's person and role from the store; without
one, the local user with full rights on their own store (source ``cli``). Every mutation is audited.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from assay.files import dumps_json

TOKEN_OPT = typer.Option(None, "--token", envvar="ASSAY_TOKEN", help="Act as this API token's person and role.")
JSON_OPT = typer.Option(False, "--json", help="Print JSON for machines.")


def _ctx(token: str | None):
    from assay.errors import BadInput
    from assay.govern.registry import local_actor
    from assay.store import open_store

    store = open_store()
    if not token:
        return store, local_actor()
    from assay.govern.tokens import token_actor

    actor = token_actor(store, token, source="cli")
    if actor is None:
        raise BadInput("the API token is unknown or revoked, or it has expired")
    return store, actor


def _print(data: Any, as_json: bool, text: str | None = None) -> None:
    if as_json or text is None:
        typer.echo(dumps_json(data, indent=2, sort_keys=True, default=str))
    else:
        typer.echo(text)


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _path_text(entry: dict[str, Any]) -> str:
    """A ``why`` entry's path as text (``lineage.MAX_PATH_STEPS`` may have left it out)."""
    return "(path omitted: run `lineage why` on a nearer asset)" if entry.get("path_omitted") else " <- ".join(entry["path"] or [])


def register(app: typer.Typer) -> None:
    reg = typer.Typer(help="Register datasets and models (versioned; never updated in place).", no_args_is_help=True)
    lin = typer.Typer(help="Lineage: ancestry, effective purposes and restrictions, why; OpenLineage in/out.", no_args_is_help=True)
    dep = typer.Typer(help="Deployment gate: request, approve, check.", no_args_is_help=True)
    bom = typer.Typer(help="AI bill of materials (CycloneDX 1.6 ML-BOM).", no_args_is_help=True)
    tr = typer.Typer(help="Transformations that may lift restrictions once approved (e.g. anonymisation).", no_args_is_help=True)

    @reg.command("dataset")
    def register_dataset(
        name: str = typer.Argument(..., help="Dataset name; registering it again makes the next version."),
        uri: str = typer.Option(..., "--uri", help="Local file or folder (hashed file by file)."),
        purposes: list[str] = typer.Option(None, "--purpose", help="Allowed purpose (repeatable or comma-separated)."),
        restrictions: list[str] = typer.Option(None, "--restriction", help="Restriction, e.g. research_only."),
        contains_minors: bool = typer.Option(False, "--contains-minors", help="The data includes minors."),
        consent_scope: str = typer.Option(None, "--consent-scope", help="What the data subjects consented to."),
        region: str = typer.Option(None, "--region", help="Where the data must stay."),
        retention_days: int = typer.Option(None, "--retention-days", help="How long it may be kept."),
        owner: str = typer.Option(None, "--owner"),
        licence: str = typer.Option(None, "--licence"),
        withdraw: str = typer.Option(None, "--withdraw", metavar="REASON",
                                     help="This version withdraws consent: its terms also bind every earlier version "
                                          "(and every model trained on one). Say whose consent changed and when."),
        token: str = TOKEN_OPT, as_json: bool = JSON_OPT,
    ) -> None:
        """Register a dataset with its purposes and restrictions (a new version of an existing name)."""
        from assay.govern.registry import register_dataset as reg_ds
        from assay.govern.registry import restriction_terms

        store, actor = _ctx(token)
        terms = restriction_terms(_split(restrictions), contains_minors=contains_minors, consent_scope=consent_scope,
                                  region=region, retention_days=retention_days)
        out = reg_ds(store, actor, name=name, uri=uri, purposes=_split(purposes), restrictions=terms, owner=owner,
                     licence=licence, withdrawal=withdraw)
        binds = (out["spec"].get("withdrawal") or {}).get("binds")
        _print(out, as_json, f"registered {out['id']} ({len(out['files'])} files, manifest {out['content_hash'][:12]}…) "
                             f"purposes {out['purposes']} restrictions {out['restrictions']}"
                             + (f"; withdrawal binding {', '.join(binds)}" if binds else ""))

    @reg.command("model")
    def register_model(
        name: str = typer.Argument(..., help="Model name."),
        weights: list[Path] = typer.Option(..., "--weights", help="A weights file or folder (repeatable), as the "
                                           "deployment will load it: links are followed at every check."),
        framework: str = typer.Option("", "--framework"),
        trained_on: list[str] = typer.Option(None, "--trained-on", help="Dataset id it was trained on (repeatable)."),
        training_run: str = typer.Option(None, "--run", help="Name of the training run."),
        purposes: list[str] = typer.Option(None, "--purpose", help="Narrow the allowed purposes further."),
        restrictions: list[str] = typer.Option(None, "--restriction"),
        transformation: str = typer.Option(None, "--transformation", help="Approved transformation id applied."),
        licence: str = typer.Option(None, "--licence"),
        token: str = TOKEN_OPT, as_json: bool = JSON_OPT,
    ) -> None:
        """Register a model: every weights file by sha256 and the run that trained it."""
        from assay.govern.registry import register_model as reg_model

        store, actor = _ctx(token)
        out = reg_model(store, actor, name=name, weights=weights, framework=framework, trained_on=_split(trained_on),
                        training_run=training_run, purposes=_split(purposes), restrictions=_split(restrictions),
                        transformation=transformation, licence=licence)
        _print(out, as_json, f"registered {out['id']} ({len(out['files'])} weights files)")

    @reg.command("evaluation")
    def register_evaluation(
        result: Path = typer.Argument(..., help="An EvaluationResult as JSON (assay.records)."),
        model: str = typer.Option(..., "--model", help="The model id it evaluated."),
        token: str = TOKEN_OPT, as_json: bool = JSON_OPT,
    ) -> None:
        """Record an evaluation run; its model hashes must match the registered weights."""
        from assay.govern.registry import register_evaluation as reg_eval
        from assay.govern.schemas import read_json_file

        store, actor = _ctx(token)
        out = reg_eval(store, actor, read_json_file(result, "evaluation result"), model)
        _print(out, as_json, f"registered {out['id']} for {model}")

    @lin.command("show")
    def show(asset: str = typer.Argument(None, help="Asset id or name."),
             all_assets: bool = typer.Option(False, "--all", help="List every asset with its effective terms."),
             as_json: bool = JSON_OPT) -> None:
        """An asset's ancestry with effective purposes and restrictions (computed now)."""
        from assay.errors import BadInput
        from assay.govern.lineage import overview
        from assay.govern.lineage import show as show_fn
        from assay.store import open_store

        store = open_store()
        if all_assets:
            rows = overview(store)["assets"]
            _print(rows, as_json, "\n".join(f"{r['id']:50s} {','.join(r['purposes']) or '-':30s} "
                                           f"{','.join(r['restrictions']) or '-'}" for r in rows) or "(empty registry)")
            return
        if not asset:
            raise BadInput("name an asset, or pass --all")
        out = show_fn(store, asset)
        if as_json:
            _print(out, True)
            return
        from rich.console import Console
        from rich.tree import Tree

        eff = out["effective"]
        tree = Tree(f"[bold]{out['asset']['id']}[/] purposes {eff['purposes']} restrictions {eff['restrictions']}")
        parents: dict[str, list[dict]] = {}
        for e in out["edges"]:
            parents.setdefault(e["output"], []).append(e)
        terms = {n["id"]: n for n in out["ancestry"]}

        def grow(node: Tree, aid: str, depth: int) -> None:
            for e in parents.get(aid, []):
                n = terms[e["input"]]
                lift = f" [green]lifts {e['lifts']}[/]" if e["lifts"] else ""
                child = node.add(f"{e['input']} via {e['run']}{lift} — purposes {n['purposes']} restrictions {n['restrictions']}")
                if depth < 20:
                    grow(child, e["input"], depth + 1)

        grow(tree, out["asset"]["id"], 0)
        Console().print(tree)
        if out.get("cycle"):
            typer.echo("WARNING: the stored lineage has a cycle (written before cycles were refused): "
                       + " -> ".join(out["cycle"]))

    @lin.command("why")
    def why(asset: str = typer.Argument(..., help="Asset id or name."),
            purpose: str = typer.Option(None, "--purpose", help="Why may (not) it be used for this purpose?"),
            restriction: str = typer.Option(None, "--restriction", help="Where does this restriction come from?"),
            as_json: bool = JSON_OPT) -> None:
        """Explain a purpose or restriction verdict with lineage paths; exit 1 when the purpose is not allowed."""
        from assay.govern.lineage import why as why_fn
        from assay.store import open_store

        out = why_fn(open_store(), asset, purpose=purpose, restriction=restriction)
        lines = [f"{out['asset']}: purposes {out['effective']['purposes']}, restrictions {out['effective']['restrictions']}"]
        if out.get("cycle"):
            lines.append("WARNING: the stored lineage has a cycle: " + " -> ".join(out["cycle"]))
        if "purpose" in out:
            p = out["purpose"]
            lines.append(f"purpose {p['purpose']!r}: {'allowed' if p['allowed'] else 'NOT allowed'}")
            for b in p["blocked_by"]:
                lines.append(f"  blocked by {b['asset']} (allows {b['allows']}): {_path_text(b)}")
                lines += [f"    narrowed by the withdrawal {w['withdrawal']} ({w['reason']}; recorded by {w['recorded_by']})"
                          for w in b.get("withdrawn_by", [])]
        if "restriction" in out:
            r = out["restriction"]
            lines.append(f"restriction {r['restriction']!r}: {'carried' if r['carried'] else 'not carried'}")
            lines += [f"  from {x['asset']}: {_path_text(x)}" for x in r["from"]]
            lines += [f"  lifted in run {x['run']} by {x['transformation']} (recorded by {x['recorded_by']})" for x in r["lifted_by"]]
        _print(out, as_json, "\n".join(lines))
        if "purpose" in out and not out["purpose"]["allowed"]:
            raise typer.Exit(1)  # "no" is exit 1 (README, exit codes), as for `deploy check`

    @lin.command("ingest")
    def ingest(events: Path = typer.Argument(..., help="A JSON file with one RunEvent, or JSONL with many."),
               token: str = TOKEN_OPT, as_json: bool = JSON_OPT) -> None:
        """Ingest OpenLineage RunEvents from a file (the HTTP API takes them at /api/v1/lineage)."""
        from assay.errors import BadInput
        from assay.govern.openlineage import ingest as ingest_fn
        from assay.govern.schemas import read_json_file

        store, actor = _ctx(token)
        try:
            docs = [read_json_file(events, "RunEvent")]  # one event, possibly spread over lines
        except BadInput:
            docs = read_json_file(events, "RunEvent", lines=True)
        out = [ingest_fn(store, actor, d) for d in docs]
        _print(out, as_json, "\n".join(f"run {r['id']}: {r['inputs']} -> {r['outputs']}" for r in out))

    @lin.command("emit")
    def emit(run_id: str = typer.Argument(..., help="A recorded run id."),
             url: str = typer.Option(None, "--url", help="OpenLineage backend (default OPENLINEAGE_URL, else a JSONL file)."),
             as_json: bool = JSON_OPT) -> None:
        """Emit one of assay's runs as a validated OpenLineage RunEvent."""
        from assay.govern.openlineage import emit as emit_fn
        from assay.govern.openlineage import run_event
        from assay.store import open_store

        event = run_event(open_store(), run_id)
        where = emit_fn([event], url)
        _print(event, as_json, f"emitted run {run_id} to {where}")

    @dep.command("request")
    def request(model: str = typer.Argument(..., help="Model id."),
                surface: str = typer.Option(..., "--surface"), purpose: str = typer.Option(..., "--purpose"),
                bundle: Path = typer.Option(..., "--bundle", help="Policy bundle (file or folder)."),
                region: str = typer.Option("global", "--region"),
                environment: str = typer.Option("production", "--environment", help="production needs two approvers."),
                name: str = typer.Option(None, "--name"), token: str = TOKEN_OPT, as_json: bool = JSON_OPT) -> None:
        """Request a deployment of a model to a surface for a purpose."""
        from assay.govern.gate import request_deployment

        store, actor = _ctx(token)
        out = request_deployment(store, actor, model=model, surface=surface, purpose=purpose, bundle=bundle,
                                 region=region, environment=environment, name=name)
        _print(out, as_json, f"requested {out['id']} (bundle {out['spec']['bundle_hash'][:12]}…)")

    @dep.command("approve")
    def approve(deployment: str = typer.Argument(...), comment: str = typer.Option("", "--comment"),
                token: str = TOKEN_OPT, as_json: bool = JSON_OPT) -> None:
        """Approve a deployment (role approver or admin; never the requester)."""
        from assay.govern.gate import approve_deployment

        store, actor = _ctx(token)
        out = approve_deployment(store, actor, deployment, comment)
        _print(out, as_json, f"{actor.name} approved {out['deployment']}; approvers now {out['approvals']}")

    @dep.command("check")
    def check(deployment: str = typer.Argument(...),
              bundle: Path = typer.Option(None, "--bundle", help="Check under this bundle (must have the requested hash)."),
              token: str = TOKEN_OPT, as_json: bool = JSON_OPT) -> None:
        """Evaluate the gate; exit 0 when allowed, 1 when denied (with the rules and lineage paths)."""
        from assay.govern.gate import check_deployment

        store, actor = _ctx(token)
        out = check_deployment(store, actor, deployment, bundle_path=bundle)
        if as_json:
            _print(out, True)
        else:
            lines = [f"{'ALLOW' if out['allowed'] else 'DENY'} {out['deployment']}  "
                     f"(bundle {out['bundle_hash'][:12]}…, verdict {out['id']})"]
            lines.append("deciding: " + ", ".join(out["deciding"]))
            for d in out["denials"]:
                lines.append(f"  [{d['check']}] {d['rule']}: {d['reason']}")
                if d.get("path") and len(d["path"]) > 1:
                    lines.append("      path: " + " <- ".join(d["path"]))
                for r, path in (d.get("paths") or {}).items():
                    if path != d.get("path"):
                        lines.append(f"      {r} travels: " + " <- ".join(path))
            typer.echo("\n".join(lines))
        if not out["allowed"]:
            raise typer.Exit(1)

    @bom.command("export")
    def bom_export(model: str = typer.Argument(...),
                   output: Path = typer.Option(None, "--output", "-o", help="Write here instead of stdout.")) -> None:
        """Export a model's CycloneDX 1.6 ML-BOM JSON (validated with cyclonedx-python-lib)."""
        from assay.govern.bom import export_bom
        from assay.store import open_store

        doc = export_bom(open_store(), model)
        text = json.dumps(doc, indent=2, sort_keys=True)
        if output:
            output.write_text(text + "\n")
            typer.echo(f"wrote {output} ({len(doc.get('components', []))} upstream components)")
        else:
            typer.echo(text)

    @tr.command("register")
    def tr_register(name: str = typer.Argument(...), lifts: list[str] = typer.Option(..., "--lifts"),
                    description: str = typer.Option("", "--description"), token: str = TOKEN_OPT,
                    as_json: bool = JSON_OPT) -> None:
        """Register a transformation and the restrictions it lifts."""
        from assay.govern.registry import register_transformation

        store, actor = _ctx(token)
        out = register_transformation(store, actor, name=name, lifts=_split(lifts), description=description)
        _print(out, as_json, f"registered {out['id']} lifting {out['lifts']} (needs an approver)")

    @tr.command("approve")
    def tr_approve(transformation: str = typer.Argument(...), token: str = TOKEN_OPT, as_json: bool = JSON_OPT) -> None:
        """Approve a transformation (role approver; not its author)."""
        from assay.govern.registry import approve_transformation

        store, actor = _ctx(token)
        out = approve_transformation(store, actor, transformation)
        _print(out, as_json, f"{actor.name} approved {out['id']}")

    app.add_typer(reg, name="register")
    app.add_typer(lin, name="lineage")
    app.add_typer(dep, name="deploy")
    app.add_typer(bom, name="bom")
    app.add_typer(tr, name="transformation")

