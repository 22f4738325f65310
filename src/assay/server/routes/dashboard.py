"""The dashboard: server-rendered pages over the same store, trace and roles as the API.

Log in with an API token (kept in an HttpOnly, SameSite=Strict cookie); every page checks the
token's role exactly as the API does, and every action goes through the same registry functions
(so an approval here is audited and refused for the same reasons as over the API).
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from assay.config import settings
from assay.errors import AssayError
from assay.govern.lineage import LIST_PAGE_MAX, MAX_OFFSET

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parents[1] / "templates"))
COOKIE = "assay_token"
NAV = [("/ui/", "overview"), ("/ui/decisions", "decisions"), ("/ui/alerts", "alerts"), ("/ui/deployments", "deployments"),
       ("/ui/lineage", "lineage"), ("/ui/reports", "reports"), ("/ui/policies", "policies")]


class _Redirect(Exception):
    pass


def _actor(request: Request):
    from assay.server.auth import client_source, token_actor

    token = request.cookies.get(COOKIE, "")
    actor = token_actor(request.app.state.store, token, source=client_source(request, "ui"), remote=True)
    if actor is None:
        raise _Redirect()
    request.state.actor = actor
    return actor


async def _refused(request: Request, status: int, message: str) -> None:
    """A refused action on the dashboard goes to the audit log like a refused API call."""
    from starlette.concurrency import run_in_threadpool

    from assay.server.app import audit_refusal

    await run_in_threadpool(audit_refusal, request.app.state.store, request, status, message)


def _csrf(request: Request) -> str:
    return hashlib.sha256(("csrf:" + request.cookies.get(COOKIE, "")).encode()).hexdigest()[:24]


def _page(request: Request, name: str, page: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"nav": NAV, "page": page, **ctx}, status_code=status)


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _guarded(handler):
    """Render the login page for anyone without a valid token, and errors as pages."""
    import functools

    @functools.wraps(handler)
    async def wrapper(request: Request, *args, **kwargs):
        try:
            return await handler(request, *args, **kwargs)
        except _Redirect:
            return RedirectResponse("/ui/login", status_code=303)
        except AssayError as e:
            from assay.server.app import MUTATING, status_for

            if request.method in MUTATING:
                await _refused(request, status_for(e), e.message)
            try:
                actor = _actor(request)
            except _Redirect:
                return RedirectResponse("/ui/login", status_code=303)
            return _page(request, "error.html", "", status=status_for(e), actor=actor, code=status_for(e), message=e.render())

    return wrapper


def _trace():
    from assay.trace import TraceLog

    home = settings().home
    if not (home / "trace").exists():
        return None
    return TraceLog.open(read_only=True)


def _events(log, kinds: tuple[str, ...], limit: int = 50) -> list[dict[str, Any]]:
    if log is None or log.size == 0:
        return []
    import pyarrow.compute as pc

    table = log.table(["index", "type", "ts", "kind", "event_subject", "payload"])
    table = table.filter(pc.and_(pc.equal(table["type"], "event"), pc.is_in(table["kind"], value_set=_pa_strings(kinds))))
    rows = table.to_pylist()[-limit:][::-1]
    return [{"index": r["index"], "when": _when(r["ts"]), "kind": r["kind"], "subject": r["event_subject"],
             "detail": (r["payload"] or "")[:240], "payload": json.loads(r["payload"] or "{}")} for r in rows]


def _pa_strings(values):
    import pyarrow as pa

    return pa.array(list(values), pa.string())


def _breakers(log) -> list[dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for e in reversed(_events(log, ("breaker_transition",), limit=100_000)):
        latest[e["subject"]] = {"scope": e["subject"], "state": e["payload"].get("to", "?"), "when": e["when"],
                                "why": e["payload"].get("reason", "")}
    return sorted(latest.values(), key=lambda b: b["scope"])


# ------------------------------------------------------------------ login


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request):
    return _page(request, "login.html", "login", actor=None)


@router.post("/login")
async def login(request: Request, token: str = Form("")):
    from assay.server.auth import token_actor

    actor = token_actor(request.app.state.store, token.strip(), source="ui-login", remote=True)
    if actor is None:
        await _refused(request, 401, "login with an unknown, expired or revoked token")
        return _page(request, "login.html", "login", status=401, actor=None, flash="That token is not valid (unknown or revoked).",
                     flash_kind="error")
    response = RedirectResponse("/ui/", status_code=303)
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict", max_age=8 * 3600)
    return response


@router.get("/logout")
async def logout(request: Request):
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


# ------------------------------------------------------------------ pages


@router.get("/", response_class=HTMLResponse)
@_guarded
async def overview(request: Request):
    actor = _actor(request)
    log = _trace()
    stats: dict[str, Any] = {"decisions": 0, "actions": {}, "alerts": 0, "size": 0, "checkpoint": "none"}
    if log is not None and log.size:
        import pyarrow.compute as pc

        t = log.table(["type", "action", "kind"])
        decisions = t.filter(pc.equal(t["type"], "decision"))
        stats["decisions"] = decisions.num_rows
        counts = pc.value_counts(decisions["action"]).to_pylist() if decisions.num_rows else []
        stats["actions"] = {c["values"]: c["counts"] for c in counts}
        stats["alerts"] = t.filter(pc.equal(t["kind"], "alert")).num_rows
        stats["size"] = log.size
        latest = log.latest_checkpoint()
        stats["checkpoint"] = f"signed at size {latest[0].size}" if latest else "none"
    return _page(request, "overview.html", "overview", actor=actor, stats=stats, breakers=_breakers(log),
                 events=_events(log, ("alert", "mitigation"), limit=10))


@router.get("/alerts", response_class=HTMLResponse)
@_guarded
async def alerts(request: Request):
    actor = _actor(request)
    log = _trace()
    return _page(request, "alerts.html", "alerts", actor=actor, breakers=_breakers(log),
                 events=_events(log, ("alert", "mitigation", "breaker_transition", "deploy_verdict")))


@router.get("/decisions", response_class=HTMLResponse)
@_guarded
async def decisions(request: Request, item: str = "", subject: str = "", rule: str = "", action: str = "", surface: str = ""):
    actor = _actor(request)
    q = {"item": item, "subject": subject, "rule": rule, "action": action, "surface": surface}
    log = _trace()
    rows: list[dict[str, Any]] = []
    total = None
    if log is not None and log.size:
        import duckdb

        table = log.table(["index", "type", "ts", "surface", "subject_id", "item_id", "rank_before", "rank_after",
                           "action", "rule_ids", "bundle_hash", "bundle_version"])
        where, params = ["type = 'decision'"], []
        if item:
            where.append("item_id = ?")
            params.append(item)
        if subject:
            where.append("subject_id = ?")
            params.append(log.pseudonymiser.one(subject))
        if rule:
            where.append("list_contains(rule_ids, ?)")
            params.append(rule)
        if action:
            where.append("action = ?")
            params.append(action)
        if surface:
            where.append("surface = ?")
            params.append(surface)
        con = duckdb.connect()
        con.register("t", table)
        cond = " AND ".join(where)
        total = con.execute(f"SELECT count(*) FROM t WHERE {cond}", params).fetchone()[0]
        cur = con.execute(f"SELECT * FROM t WHERE {cond} ORDER BY index DESC LIMIT 200", params)
        names = [d[0] for d in cur.description]
        found = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        con.close()
        for r in found:
            rows.append({**r, "when": _when(r["ts"]), "rules": ", ".join(r["rule_ids"] or []) or "—",
                         "bundle": f"{r['bundle_version']} {(r['bundle_hash'] or '')[:10]}"})
    from assay.policy.actions import action_names

    return _page(request, "decisions.html", "decisions", actor=actor, q=q, rows=rows, total=total,
                 actions=["", *action_names()])


@router.get("/decision/{index}", response_class=HTMLResponse)
@_guarded
async def decision(request: Request, index: int):
    actor = _actor(request)
    log = _trace()
    if log is None:
        from assay.errors import BadInput

        raise BadInput("there is no decision trace yet")
    rec = log.record(index)
    proof = log.prove_inclusion(index)
    from assay.trace.proofs import check_bundle

    try:
        proof_ok, proof_text = True, "Verified with the log's public key: " + check_bundle(proof, log.verifier)
    except Exception as e:  # a failed proof is shown, never hidden
        proof_ok, proof_text = False, f"Inclusion proof FAILED: {e}"
    rules, bundle_known = _rule_texts(request, rec)
    attribution = None
    if rec.get("attribution"):
        attribution = sorted(json.loads(rec["attribution"]).items(), key=lambda kv: -abs(kv[1]))
    models = [{"version": m, "lineage": _model_lineage(request, m)} for m in (rec.get("model_versions") or [])]
    from assay.policy.actions import ACTIONS, explain

    action = rec.get("action") or ""
    verb = explain(action) if action in ACTIONS and action != "allow" else "shown"
    event = json.dumps(json.loads(rec["payload"]), indent=2) if rec.get("type") == "event" and rec.get("payload") else None
    return _page(request, "decision.html", "decisions", actor=actor, rec=rec, when=_when(rec.get("ts")), verb=verb, rules=rules,
                 bundle_known=bundle_known, shadow=", ".join(rec.get("shadow_rule_ids") or []), attribution=attribution,
                 models=models, proof_ok=proof_ok, proof_text=proof_text, event=event)


def _rule_texts(request: Request, rec: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The fired rules with their conditions, from the stored bundle that made the decision."""
    ids = rec.get("rule_ids") or []
    reasons = rec.get("reasons") or []
    by_id: dict[str, Any] = {}
    known = False
    if rec.get("bundle_hash"):
        try:
            from assay.govern.gate import store_bundle
            from assay.govern.registry import local_actor

            with request.app.state.store.session() as s:
                bundle = store_bundle(s, local_actor(), bundle_hash=rec["bundle_hash"])
            by_id = {r.id: r for r in bundle.rules}
            known = True
        except AssayError:
            pass
    out = []
    for i, rid in enumerate(ids):
        rule = by_id.get(rid)
        out.append({"id": rid, "action": str(rule.action) if rule else "", "when": rule.when if rule else "(bundle not stored)",
                    "reason": reasons[i] if i < len(reasons) else (rule.reason if rule else "")})
    return out, known


def _model_lineage(request: Request, version: str) -> str:
    try:
        from assay.govern.lineage import show

        view = show(request.app.state.store, version)
    except AssayError:
        return ""
    ancestors = view.get("ancestry") or view.get("ancestors") or []
    names = [a.get("id", "") if isinstance(a, dict) else str(a) for a in ancestors]
    return ", ".join(n for n in names if n and n != version)


LINEAGE_PAGE = 200  # assets per lineage page by default: the drawing stays readable and quick
DEPLOYMENTS_PAGE = 100  # each row reads the deployment's view and verdicts: a page stays quick
EVALUATIONS_PAGE = 200


def _pager(path: str, noun: str, offset: int, limit: int, shown: int, total: int, anchor: str, note: str = "") -> dict[str, Any]:
    """Where a page of a listing is (``{noun} first–last of total``, previous and next links),
    for ``_pager.html``: every listing of the dashboard pages the same way."""
    return {"path": path, "noun": noun, "anchor": anchor, "note": note, "first": offset + 1, "last": offset + shown,
            "total": total, "limit": limit, "previous": max(0, offset - limit) if offset else None,
            "following": offset + limit if offset + limit < total else None}


@router.get("/deployments", response_class=HTMLResponse)
@_guarded
async def deployments(request: Request, flash: str = "", kind: str = "info",
                      offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                      limit: Annotated[int, Query(ge=1, le=LIST_PAGE_MAX)] = DEPLOYMENTS_PAGE):
    """A page of the deployment requests (100 by default): the whole registry's, each with its
    view and verdicts read, grew without bound."""
    actor = _actor(request)
    rows, pager = _deployments(request, offset, limit)
    return _page(request, "deployments.html", "deployments", actor=actor, deployments=rows, pager=pager,
                 csrf=_csrf(request), flash=flash or None, flash_kind=kind)


def _deployments(request: Request, offset: int = 0, limit: int = DEPLOYMENTS_PAGE) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A page of deployments as the table shows them, and where the page is."""
    from assay.govern.gate import deployment_view, verdicts_for
    from assay.govern.lineage import count_assets, list_assets

    store = request.app.state.store
    out = []
    page = list_assets(store, "deployment", limit=limit, offset=offset)
    for a in page:
        view = deployment_view(store, a["id"])
        spec = view.get("spec", {})
        verdicts = verdicts_for(store, a["id"])
        verdict = None
        if verdicts:
            last = verdicts[-1]
            denied_by = last.get("denied_by") or last.get("deciding") or []
            verdict = {"allowed": bool(last.get("allowed")), "summary": ", ".join(map(str, denied_by))[:120]}
        out.append({"id": a["id"], "model": spec.get("model_id", ""), "surface": spec.get("surface", ""), "purpose": spec.get("purpose", ""),
                    "bundle": spec.get("bundle", ""), "requested_by": spec.get("requested_by", ""),
                    "approvals": [x if isinstance(x, str) else x.get("approver", "") for x in view.get("approvals", [])],
                    "verdict": verdict})
    return out, _pager("/ui/deployments", "Deployments", offset, limit, len(out), count_assets(store, "deployment"),
                       "deployments-page")


@router.post("/deployments/approve")
@_guarded
async def approve(request: Request, deployment: str = Form(...), csrf: str = Form("")):
    actor = _actor(request)
    if csrf != _csrf(request):
        await _refused(request, 403, "stale or forged form (CSRF token mismatch)")
        return _page(request, "error.html", "deployments", status=403, actor=actor, code=403,
                     message="stale form: reload the page and try again")
    from assay.govern.gate import approve_deployment
    from assay.server.app import status_for

    try:
        await run_in_threadpool(approve_deployment, request.app.state.store, actor, deployment)
    except AssayError as e:
        await _refused(request, status_for(e), e.message)
        rows, pager = _deployments(request)
        return _page(request, "deployments.html", "deployments", status=status_for(e), actor=actor, deployments=rows,
                     pager=pager, csrf=_csrf(request), flash=f"Refused: {e.message}", flash_kind="error")
    rows, pager = _deployments(request)
    return _page(request, "deployments.html", "deployments", actor=actor, deployments=rows, pager=pager, csrf=_csrf(request),
                 flash=f"Approved {deployment} as {actor.name} ({actor.role}).", flash_kind="info")


@router.get("/lineage", response_class=HTMLResponse)
@_guarded
async def lineage(request: Request, offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                  limit: Annotated[int, Query(ge=1, le=LIST_PAGE_MAX)] = LINEAGE_PAGE):
    """A page of the registry's assets (by kind and id) with their effective terms, and the
    lineage among them drawn: the whole registry in one page grew without bound (8.7 MB), and
    the drawing's layering is quadratic in the assets drawn."""
    actor = _actor(request)
    from assay.govern.lineage import overview

    # effective terms computed along the lineage now (the governance engine's one computation)
    view = overview(request.app.state.store)
    assets = view["assets"][offset:offset + limit]
    shown = {a["id"] for a in assets}
    edges = [(src, dst) for src, dst in view["edges"] if src in shown and dst in shown]
    total = len(view["assets"])
    return _page(request, "lineage.html", "lineage", actor=actor, assets=assets, svg=lineage_svg(assets, edges),
                 pager=_pager("/ui/lineage", "Assets", offset, limit, len(assets), total, "lineage-page",
                              " (the drawing shows the lineage among them)"))


def lineage_svg(assets: list[dict[str, Any]], edges: list[tuple[str, str]]) -> str:
    """A layered drawing of the DAG (longest-path layers), coloured by kind; written here because
    it is a few lines and a graph library would add a large dependency to the control plane."""
    ids = [a["id"] for a in assets]
    if not ids:
        return '<p class="muted">The registry is empty.</p>'
    layer = dict.fromkeys(ids, 0)
    for _ in range(len(ids)):
        changed = False
        for src, dst in edges:
            if src in layer and dst in layer and layer[dst] <= layer[src]:
                layer[dst] = layer[src] + 1
                changed = True
        if not changed:
            break
    columns: dict[int, list[str]] = {}
    for i in ids:
        columns.setdefault(layer[i], []).append(i)
    w, h, gap_x, gap_y = 230, 34, 60, 16
    pos = {i: (20 + c * (w + gap_x), 20 + r * (h + gap_y)) for c, col in columns.items() for r, i in enumerate(col)}
    width = 40 + (max(columns) + 1) * (w + gap_x)
    height = 40 + max(len(c) for c in columns.values()) * (h + gap_y)
    colour = {"dataset": "#ddf4ff", "model": "#fff8c5", "evaluation": "#dafbe1", "deployment": "#ffebe9"}
    kinds = {a["id"]: a for a in assets}
    parts = [f'<svg id="lineage-graph" width="{width}" height="{height}" role="img" aria-label="lineage graph">']
    for src, dst in edges:
        if src in pos and dst in pos:
            (x1, y1), (x2, y2) = pos[src], pos[dst]
            parts.append(f'<line x1="{x1 + w}" y1="{y1 + h / 2}" x2="{x2}" y2="{y2 + h / 2}" stroke="#8c959f"/>')
    for i, (x, y) in pos.items():
        a = kinds[i]
        fill = colour.get(a["kind"], "#f6f8fa")
        label = html.escape(i if len(i) < 34 else i[:31] + "…")
        terms = html.escape(", ".join(a["purposes"][:3]) + (" | " + ", ".join(a["restrictions"][:2]) if a["restrictions"] else ""))
        parts.append(f'<g><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="5" fill="{fill}" stroke="#8c959f"/>'
                     f'<text x="{x + 6}" y="{y + 14}">{label}</text><text x="{x + 6}" y="{y + 28}" fill="#57606a">{terms}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


@router.get("/reports", response_class=HTMLResponse)
@_guarded
async def reports(request: Request, offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                  limit: Annotated[int, Query(ge=1, le=LIST_PAGE_MAX)] = EVALUATIONS_PAGE):
    """Every run under ASSAY_HOME, read from its run log (``assay.runlog``): verdict first, the
    gates that did not pass with their reasons, the headline metrics with intervals. A run log
    that cannot be read is listed as unreadable, with why. Below, a page (``offset``, ``limit``)
    of the evaluations registered with the control plane: all of them grew without bound."""
    from assay.runlog import find_runlogs
    from assay.server import evidence

    actor = _actor(request)
    home = settings().home
    views, unreadable = await run_in_threadpool(evidence.load_runs, find_runlogs(home, limit=200))
    runs = []
    for v in views:
        rel = v.log.path.relative_to(home).as_posix()
        runs.append({"path": rel, "kind": v.log.kind, "name": v.log.header.name, "run_id": v.log.run_id, "verdict": v.verdict,
                     "when": v.log.header.created_at, "blocking": [g for g in v.gates if g["verdict"] != "pass"],
                     "metrics": [m for m in v.metrics[:4]]})
    bad = [{"path": u.path.relative_to(home).as_posix(), "error": u.error} for u in unreadable]
    # evaluations registered with the control plane (over HTTP too, from runs whose logs live elsewhere)
    from assay.govern.lineage import count_assets, list_assets

    store = request.app.state.store
    evaluations = []
    for a in list_assets(store, "evaluation", limit=limit, offset=offset):
        spec = a.get("spec", {}) or {}
        result = spec.get("result", spec) or {}
        judges = result.get("judges") or {}
        # Next to every judged metric: the judge that made it, and whether it was validated.
        metrics = {k: (f"{v} [{judges[k]['judge']}{'' if judges[k].get('validated') else ', NOT VALIDATED'}]" if k in judges else v)
                   for k, v in (result.get("metrics") or {}).items()}
        evaluations.append({"id": a["id"], "suite": spec.get("suite", ""), "target": result.get("target", spec.get("target", "")),
                            "metrics": json.dumps(metrics)[:400],
                            "gates": result.get("gate_outcomes") or result.get("gate_verdicts", "")})
    pager = _pager("/ui/reports", "Evaluations", offset, limit, len(evaluations), count_assets(store, "evaluation"),
                   "evaluations-page")
    return _page(request, "reports.html", "reports", actor=actor, runs=runs, unreadable=bad, evaluations=evaluations,
                 pager=pager)


@router.get("/runs/{path:path}", response_class=HTMLResponse)
@_guarded
async def run_page(request: Request, path: str):
    """One run from its run log: identity and hashes, gate verdicts, metrics with their intervals
    (an inline SVG plot), judges and timings."""
    from assay.runlog import is_runlog, read_runlog
    from assay.server import evidence

    actor = _actor(request)
    home = settings().home.resolve()
    target = _under_home(path)
    if target is None or not is_runlog(target) or not target.is_file():
        return _page(request, "error.html", "reports", status=404, actor=actor, code=404, message=f"no run log {path[:200]!r}")
    log = await run_in_threadpool(read_runlog, target)  # a damaged one raises RunLogError: a 400 naming what is wrong
    v = evidence.view(log)
    report = log.artifact("report")
    return _page(request, "run.html", "reports", actor=actor, run=v, h=log.header, s=log.summary,
                 plot=evidence.interval_plots(v.metrics, label=f"metrics of {log.run_id}"),
                 report=report.relative_to(home).as_posix() if report is not None and report.is_file() else None)


@router.get("/reports/{path:path}")
@_guarded
async def report_file(request: Request, path: str):
    _actor(request)
    target = _under_home(path)
    if target is None or target.suffix not in (".html", ".png", ".svg", ".json") or not target.is_file():
        return Response("not found", status_code=404)
    return FileResponse(target)


def _under_home(path: str) -> Path | None:
    """``path`` resolved (symlinks too) when it stays under ASSAY_HOME; None when it leaves it or
    names no file at all (a NUL byte, a name too long: resolving those raises)."""
    home = settings().home.resolve()
    try:
        target = (home / path).resolve()
    except (ValueError, OSError):
        return None
    return target if home in target.parents else None


@router.get("/policies", response_class=HTMLResponse)
@_guarded
async def policies(request: Request):
    actor = _actor(request)
    import sqlalchemy as sa

    from assay.govern.gate import store_bundle
    from assay.govern.registry import local_actor
    from assay.policy import diff
    from assay.store.schema import PolicyBundleRow

    store = request.app.state.store
    with store.session() as s:
        rows = s.scalars(sa.select(PolicyBundleRow).order_by(PolicyBundleRow.created_at)).all()
        loaded = []
        for row in rows:
            try:
                loaded.append((row, store_bundle(s, local_actor(), bundle_hash=row.hash)))
            except AssayError:
                loaded.append((row, None))
    bundles = [{"hash": r.hash, "name": r.name, "version": r.version, "when": r.created_at.strftime("%Y-%m-%d %H:%M"),
                "by": r.created_by, "counts": f"{len(b.rules)} / {len(b.gates)} / {len(b.purposes)} / {len(b.alerts)}" if b else "unloadable"}
               for r, b in loaded]
    diffs = []
    by_name: dict[str, list] = {}
    for r, b in loaded:
        if b is not None:
            by_name.setdefault(r.name, []).append(b)
    for versions in by_name.values():
        for old, new in itertools.pairwise(versions):
            d = diff(old, new)
            lines = [f"- {s}/{i}" for s, ids in d.removed.items() for i in ids]
            lines += [f"+ {s}/{i}" for s, ids in d.added.items() for i in ids]
            lines += [f"~ {s}/{i}.{f}: {a!r} -> {b!r}" for s, items in d.changed.items() for i, fs in items.items() for f, (a, b) in fs.items()]
            diffs.append({"old": f"{old.name} {old.version} ({old.short_hash})", "new": f"{new.name} {new.version} ({new.short_hash})",
                          "text": "\n".join(lines) or "no changes"})
    return _page(request, "policies.html", "policies", actor=actor, bundles=bundles, diffs=diffs)
