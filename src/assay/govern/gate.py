"""The deployment gate: purposes over the model's whole lineage, release gates over its
evaluations, the weights a deployment will load against their registered hashes, and approvals.

Semantics a reviewer can rely on (docs/govern.md states them for users):

- The lineage is read through ``lineage.governed``, the one computation ``lineage why``, the BOM
  and the dashboard read too; a stored cycle denies (``assay:lineage-cycle``).
- **Purpose limitation is built in**: the deployment's purpose must be one that every declaring
  asset upstream of the model allows (rule ``assay:purpose-limitation``), whatever the bundle says.
- The bundle's ``purposes`` section is evaluated once for the model's effective terms and once
  for every upstream source or asset whose own restrictions still reach the model, so a denial
  names the asset that caused it, what it is about (the restrictions the rule needs) and a lineage
  path that carries them. Deny by default, a deny beats an allow (``Bundle.check_purposes``).
- The bundle's ``gates`` run over the metrics of evaluations made on exactly the registered weights.
- Weights are checked at check time as the deployment will load them (``verify_weights``).
- Production needs two distinct approvers (role approver or admin), never the requester; any
  other environment needs one.
- Every verdict is stored with the bundle hash and appended to the trace as an
  ``Event(kind="deploy_verdict")`` when the trace part is installed.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from assay.errors import BadInput
from assay.policy.supplied import PURPOSE
from assay.records import Event
from assay.store import Store
from assay.store.schema import Approval, Asset, AssetFile, PolicyBundleRow, Verdict

from .lineage import governed
from .propagation import Ancestry, LineageGraph
from .registry import (
    Actor,
    Forbidden,
    NotFound,
    _name,
    add_approval,
    asset_view,
    audit,
    check_approver,
    files_under,
    resolve,
    sha256_file,
    weights_path,
)

PURPOSE_LIMITATION = "assay:purpose-limitation"
LINEAGE_CYCLE = "assay:lineage-cycle"
APPROVER_ROLES = ("approver", "admin")
MAX_PATHS = 5


# ---------------------------------------------------------------- lineage part (pure, benchmarked)


@dataclass
class LineageVerdict:
    allowed: bool
    deciding: list[str] = field(default_factory=list)
    denials: list[dict[str, Any]] = field(default_factory=list)
    allow_rules: list[str] = field(default_factory=list)
    effective_purposes: list[str] = field(default_factory=list)
    effective_restrictions: list[str] = field(default_factory=list)
    contexts_evaluated: int = 0
    ancestry_size: int = 0


def _about(bundle: Any, ctx: dict[str, Any], deployment: dict[str, Any], rule: str) -> list[str]:
    """What a denial by ``rule`` is about: a smallest-by-removal subset of the context's
    restrictions with which ``rule`` still denies (empty when the purposes alone decide)."""
    keep = list(ctx["restrictions"])
    for r in list(keep):
        trial = [x for x in keep if x != r]
        result = bundle.check_purposes({"dataset": {"purposes": ctx["purposes"], "restrictions": trial},
                                        "deployment": deployment})
        if not result.allowed and rule in result.deciding:
            keep = trial
    return keep


def _withdrawal_note(anc: Ancestry, i: int, purpose: str) -> str:
    notes = [f"{w['withdrawal']} withdrew it ({w['reason']})" for w in anc.withdrawn_by(i) if purpose in w["removes_purposes"]]
    return f"; {'; '.join(notes)}" if notes else ""


def evaluate_lineage(graph: LineageGraph, target: int, bundle: Any, deployment: dict[str, Any],
                     prefix: list[str] | None = None, ancestry: Ancestry | None = None) -> LineageVerdict:
    """Purpose verdict for deploying node ``target`` of ``graph`` (its ancestry) under ``bundle``.

    Every denial names a lineage path that really carries what it is about: the path to an asset
    that blocks the purpose, or, for a bundle rule that depends on restrictions, a path on which
    none of those restrictions was lifted (``about``; ``paths`` holds one such path per restriction).
    """
    anc = ancestry if ancestry is not None else Ancestry(graph, target)
    prefix = list(prefix or [])
    purpose = deployment.get("purpose", "")
    target_id = graph.ids[target]
    verdict = LineageVerdict(allowed=True, effective_purposes=anc.purposes(), effective_restrictions=anc.restrictions(),
                             ancestry_size=graph.n)

    # 0. a lineage that is not a DAG (written before cycles were refused) cannot be vouched for.
    if anc.cycle:
        verdict.allowed = False
        verdict.deciding.append(LINEAGE_CYCLE)
        verdict.denials.append({
            "check": "lineage", "rule": LINEAGE_CYCLE, "asset": target_id, "cycle": anc.cycle,
            "reason": f"the lineage of {target_id} contains a cycle ({' -> '.join(anc.cycle)}); "
                      "an asset cannot be its own ancestor, so its terms cannot be vouched for",
            "path": [*prefix, target_id]})

    # 1. built-in purpose limitation: every declaring asset upstream must allow the purpose.
    blockers = anc.purpose_blockers(purpose)
    if blockers:
        verdict.allowed = False
        verdict.deciding.append(PURPOSE_LIMITATION)
        for i in blockers[:MAX_PATHS]:
            allows = graph.purposes.decode(graph.own_purposes[i])
            denial = {
                "check": "purposes", "rule": PURPOSE_LIMITATION, "asset": graph.ids[i],
                "reason": f"{graph.ids[i]} allows only {allows or 'no purposes'}, not {purpose!r}"
                          f"{_withdrawal_note(anc, i, purpose)}; a derived model may be used only for purposes every input allows",
                "path": prefix + (anc.path(i) or []),
            }
            if withdrawn := anc.withdrawn_by(i):
                denial["withdrawn_by"] = withdrawn
            verdict.denials.append(denial)
        if len(blockers) > MAX_PATHS:
            verdict.denials.append({"check": "purposes", "rule": PURPOSE_LIMITATION, "asset": None, "path": [],
                                    "reason": f"and {len(blockers) - MAX_PATHS} more upstream assets"})

    # 2. the bundle's purposes section, once per distinct (purposes, surviving restrictions).
    if bundle is not None and bundle.purposes:
        surviving = graph.own_restrictions & anc.live
        contributors = np.flatnonzero(anc.roots | surviving.any(axis=1))
        contexts: dict[bytes, tuple[list[int], dict[str, Any]]] = {}
        for i in contributors.tolist():
            if i == target:
                continue
            key = anc.terms.allowed[i].tobytes() + b"|" + surviving[i].tobytes()
            if key not in contexts:
                contexts[key] = ([], {"purposes": anc.purposes(i),
                                      "restrictions": graph.restrictions.decode(surviving[i])})
            contexts[key][0].append(i)
        # the model's own effective terms last: its denial is shown only when no upstream one explains it
        contexts[b"target"] = ([target], {"purposes": verdict.effective_purposes,
                                          "restrictions": verdict.effective_restrictions})
        verdict.contexts_evaluated = len(contexts)
        allow_rules: set[str] = set()
        shown: dict[str, int] = {}
        hidden: dict[str, int] = {}
        for key, (members, ctx) in contexts.items():
            result = bundle.check_purposes({"dataset": ctx, "deployment": deployment})
            allow_rules.update(result.matched_allow)
            if result.allowed:
                continue
            verdict.allowed = False
            reasons = dict(zip(result.deciding, result.reasons, strict=False)) if len(result.reasons) == len(result.deciding) else {}
            for rule in result.deciding:
                if key == b"target" and rule in verdict.deciding:
                    continue
                if rule not in verdict.deciding:
                    verdict.deciding.append(rule)
                about = _about(bundle, ctx, deployment, rule)
                for i in members:
                    if shown.get(rule, 0) >= MAX_PATHS:
                        hidden[rule] = hidden.get(rule, 0) + 1
                        continue
                    shown[rule] = shown.get(rule, 0) + 1
                    verdict.denials.append(_bundle_denial(anc, i, rule, reasons.get(rule) or "; ".join(result.reasons),
                                                          ctx, about, prefix))
        for rule, count in hidden.items():
            verdict.denials.append({"check": "purposes", "rule": rule, "asset": None, "path": [],
                                    "reason": f"and {count} more upstream datasets denied by the same rule"})
        verdict.allow_rules = sorted(allow_rules)
    elif bundle is not None and not bundle.purposes:
        verdict.allowed = False
        verdict.deciding.append("default-deny")
        verdict.denials.append({"check": "purposes", "rule": "default-deny", "asset": target_id,
                                "reason": "the bundle has no purposes rule that allows this use (deny by default)",
                                "path": [*prefix, target_id]})
    return verdict


def _bundle_denial(anc: Ancestry, i: int, rule: str, reason: str, ctx: dict[str, Any], about: list[str],
                   prefix: list[str]) -> dict[str, Any]:
    """A denial by a bundle rule for node ``i``'s terms, with paths that carry what it is about.

    For an upstream asset: ``path`` leads to it without crossing a run that lifted any of
    ``about`` (or, when no single path carries them all, the path for the first), and ``paths``
    one path per restriction. For the model itself (its effective terms): ``path`` ends at the
    model and ``paths`` lead to the nearest asset each restriction comes from."""
    paths: dict[str, list[str]] = {}
    if i == anc.target:
        path = [*prefix, anc.graph.ids[i]]
        for r in about:
            sources = anc.restriction_sources(r)
            if sources:
                paths[r] = prefix + (anc.path(sources[0], [r]) or [])
    else:
        for r in about:
            paths[r] = prefix + (anc.path(i, [r]) or [])
        whole = anc.path(i, about)
        path = prefix + whole if whole is not None else (paths[about[0]] if about else prefix + (anc.path(i) or []))
    return {"check": "purposes", "rule": rule, "asset": anc.graph.ids[i], "reason": reason,
            "terms": {"purposes": ctx["purposes"], "restrictions": ctx["restrictions"]},
            "about": about, "paths": paths, "path": path}


# ---------------------------------------------------------------- bundles kept by hash


def _bundle_files(path: Path) -> dict[str, str]:
    """The text of a bundle's files (its YAML, signature and key), each read bounded."""
    from assay.policy.source import read_bounded

    from .schemas import BUNDLE_SUFFIXES

    def text(p: Path) -> str:
        try:
            return read_bounded(p).decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadInput(f"{p}: not UTF-8 text (byte {e.start})") from None

    if path.is_file():
        return {path.name: text(path)}
    if path.is_dir():
        return {p.relative_to(path).as_posix(): text(p) for p in sorted(path.rglob("*"))
                if p.is_file() and not p.name.startswith(".") and p.suffix in BUNDLE_SUFFIXES}
    raise BadInput(f"policy bundle {path}: no such file or folder")


def load_policy(path: str | Path):
    from assay.errors import require_extra

    policy = require_extra("assay.policy", "all")
    return policy.load_bundle(Path(path))


def _load_written(tmp: str, files: dict[str, str]):
    """The bundle whose ``files`` were written into ``tmp``; an error names the bundle's own file
    (``bundle.yaml:3:7``), not the temporary folder."""
    from assay.errors import LocatedError, Location

    try:
        return load_policy(Path(tmp, next(iter(files))) if len(files) == 1 else Path(tmp))
    except LocatedError as e:
        e.location = Location(Path(e.location.file).relative_to(tmp).as_posix()
                              if Path(e.location.file).is_relative_to(tmp) else e.location.file,
                              e.location.line, e.location.column)
        raise


def _stored_bundle(session, bundle_hash: str):
    row = session.get(PolicyBundleRow, bundle_hash)
    if row is None:
        raise NotFound(f"policy bundle {bundle_hash[:12]}… is not stored; pass --bundle")
    with tempfile.TemporaryDirectory(prefix="assay-bundle-") as tmp:
        for rel, text in row.files.items():
            dest = Path(tmp, rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
        bundle = _load_written(tmp, row.files)
    if bundle.hash != bundle_hash:
        raise BadInput(f"stored bundle reloads with hash {bundle.hash[:12]}…, expected {bundle_hash[:12]}…")
    return bundle


def store_bundle(session, actor: Actor, path: str | Path | None = None, files: dict[str, str] | None = None,
                 bundle_hash: str | None = None):
    """Load a bundle from a path, from its files' text, or by the hash of one stored before; keep its files."""
    if bundle_hash is not None:
        return _stored_bundle(session, bundle_hash)
    if files is not None:
        if not files:
            raise BadInput("bundle_files is empty")
        with tempfile.TemporaryDirectory(prefix="assay-bundle-") as tmp:
            for rel in files:
                if Path(rel).is_absolute() or ".." in Path(rel).parts or not rel.endswith((".yaml", ".yml", ".sig", ".pub")):
                    raise BadInput(f"bundle file name {rel!r} must be a relative .yaml/.yml path")
                dest = Path(tmp, rel)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(files[rel], encoding="utf-8")
            bundle = _load_written(tmp, files)
    else:
        if path is None:
            raise BadInput("a policy bundle is required (a path, its files, or the hash of a stored one)")
        path = Path(path)
        bundle = load_policy(path)
        files = _bundle_files(path)
    if session.get(PolicyBundleRow, bundle.hash) is None:
        session.add(PolicyBundleRow(hash=bundle.hash, name=bundle.name, version=str(bundle.version),
                                    files=dict(files), created_by=actor.name))
        session.flush()
    return bundle


# ---------------------------------------------------------------- deployments


def request_deployment(store: Store, actor: Actor, *, model: str, surface: str, purpose: str,
                       bundle: str | Path | None = None, bundle_files: dict[str, str] | None = None,
                       bundle_hash: str | None = None, region: str = "global", environment: str = "production",
                       name: str | None = None) -> dict[str, Any]:
    """Ask to deploy ``model`` to ``surface`` for ``purpose`` under the policy bundle at ``bundle``."""
    actor.require("engineer", "requesting a deployment")
    for value, what in ((surface, "surface"), (purpose, "purpose"), (region, "region"), (environment, "environment")):
        _name(value, what)
    with store.session() as s:
        m = resolve(s, model, "model")
        b = store_bundle(s, actor, bundle, bundle_files, bundle_hash)
        from .registry import _new_asset

        dep = _new_asset(s, actor, kind="deployment", name=name or f"{m.name}-{surface}", purposes=[purpose],
                         subject_id=m.id, spec={"surface": surface, "purpose": purpose, "region": region,
                                                "environment": environment, "bundle_hash": b.hash,
                                                "bundle": f"{b.name}@{b.version}", "model_id": m.id,
                                                "requested_by": actor.name,
                                                "requested_by_accountable": actor.accountable})
        return asset_view(s, dep, with_files=False)


def approve_deployment(store: Store, actor: Actor, deployment: str, comment: str = "") -> dict[str, Any]:
    """An approval by one person with role approver or admin; never the requester (nor whoever
    minted the requester's token), never twice by the same accountable principal."""
    from .schemas import ApprovalIn, parse

    comment = parse(ApprovalIn, {"comment": comment}).comment
    check_approver(actor, "approving a deployment")
    with store.session() as s:
        dep = resolve(s, deployment, "deployment")
        requesters = _requesters(dep)
        if actor.name in requesters or actor.accountable in requesters:
            raise Forbidden(f"{actor.name} may not approve {dep.id}: it was requested by {' / '.join(sorted(requesters))}"
                            + ("" if actor.accountable == actor.name else f", and {actor.name}'s token was minted by {actor.accountable}"))
        add_approval(s, actor, "deployment", dep.id, comment)
        audit(s, actor, "approve_deployment", dep.id, {"comment": comment, "accountable": actor.accountable})
        return {"deployment": dep.id, "approved_by": actor.name, "approvals": _approvers(s, dep)}


def _requesters(dep: Asset) -> set[str]:
    """Who requested a deployment, and who minted the token they requested it with."""
    spec = dep.spec or {}
    return {x for x in (spec.get("requested_by"), spec.get("requested_by_accountable")) if x}


def _approvers(s, dep: Asset) -> list[str]:
    """The accountable principals who approved, other than the requesters: counted per principal."""
    rows = s.scalars(sa.select(Approval).where(Approval.subject_kind == "deployment", Approval.subject_id == dep.id))
    requesters = _requesters(dep)
    return sorted({a.accountable for a in rows if a.role in APPROVER_ROLES and a.accountable not in requesters
                   and a.approver not in requesters})


def verify_weights(s, model: Asset, root: Path | None = None, actor: Actor | None = None) -> dict[str, Any]:
    """Check the weights a deployment will load, now: every registered path (links followed, as a
    loader follows them) re-hashed; a path that resolves to another file than at registration is
    a change of weights even if the bytes match; a folder registered as weights must hold exactly
    the files it held. ``root`` checks a copy elsewhere (hashes and folder contents only). For a
    confined ``actor`` (a request over the network) nothing outside the data roots is read."""
    base = root or (Path(model.uri) if model.uri else None)
    files = s.scalars(sa.select(AssetFile).where(AssetFile.asset_id == model.id).order_by(AssetFile.path)).all()
    layout = (model.spec or {}).get("weights") or {}
    problems = []
    if base is None or not files:
        problems.append(f"{model.id} has no local weights to verify (uri {model.uri!r})")
        return {"passed": False, "files": len(files), "problems": problems}
    targets = layout.get("targets", {}) if root is None and layout else None
    for f in files:
        p, refused = weights_path(base, f.path, actor)
        if refused:
            problems.append(refused)
            continue
        if not p.is_file():
            problems.append(f"{f.path}: missing on disk at {p}")
            continue
        if targets is not None:
            now, then = os.path.realpath(p), targets.get(f.path, os.path.abspath(p))
            if now != then:
                problems.append(f"{p} now resolves to {now}, registered as {then}: a change of target is a change "
                                "of weights (weights changed after registration; register a new model version)")
        actual = sha256_file(p)
        if actual != f.sha256:
            problems.append(f"{p}: sha256 {actual} differs from the registered {f.sha256} (weights changed after registration)")
    registered = {f.path for f in files}
    for folder in layout.get("folders", []):
        where = base / folder
        if actor is not None and weights_path(base, folder, actor)[1]:
            continue  # outside the data roots: its file names are not listed either (the files were refused above)
        if where.is_dir():
            extra = sorted(p for p in ((Path(folder) / x).as_posix() for x in files_under(where)) if p not in registered)
            if extra:
                problems.append(f"weights folder {where} now holds files that were not registered: {', '.join(extra[:5])}"
                                + (f" and {len(extra) - 5} more" if len(extra) > 5 else "") + " (weights changed after registration)")
    return {"passed": not problems, "files": len(files), "problems": problems}


def _evaluation_metrics(s, model: Asset) -> tuple[dict[str, Any], list[str]]:
    registered = {f.sha256 for f in s.scalars(sa.select(AssetFile).where(AssetFile.asset_id == model.id))}
    evals = s.scalars(sa.select(Asset).where(Asset.kind == "evaluation", Asset.subject_id == model.id)
                      .order_by(Asset.created_at, Asset.version)).all()
    latest: dict[str, Asset] = {}
    for e in evals:
        if set(e.spec["result"]["model_hashes"].values()) == registered:
            latest[e.spec["suite"]] = e
    # The gates weigh evidence: each metric's n and 95% interval travel with its value.
    ev: dict[str, Any] = {"metrics": {}, "n": {}, "intervals": {}, "judges": {}}
    for e in latest.values():
        result = e.spec["result"]
        ev["metrics"].update({k: float(v) for k, v in result["metrics"].items()})
        ev["n"].update({k: int(v) for k, v in (result.get("n") or {}).items()})
        ev["intervals"].update({k: list(v) for k, v in (result.get("intervals") or {}).items()})
        ev["judges"].update(result.get("judges") or {})
    return ev, sorted(e.id for e in latest.values())


def check_deployment(store: Store, actor: Actor, deployment: str, *, bundle_path: str | Path | None = None,
                     weights_root: str | Path | None = None, record: bool = True) -> dict[str, Any]:
    """Evaluate the gate for a requested deployment and record the verdict."""
    actor.require("engineer", "checking a deployment")
    with store.session() as s:
        dep = resolve(s, deployment, "deployment")
        model = s.get(Asset, dep.subject_id)
        spec = dep.spec
        if bundle_path is not None:
            bundle = load_policy(bundle_path)
            if bundle.hash != spec["bundle_hash"]:
                raise BadInput(f"bundle at {bundle_path} has hash {bundle.hash[:12]}… but {dep.id} was requested "
                               f"under {spec['bundle_hash'][:12]}…; request the deployment again to change policy")
        else:
            bundle = _stored_bundle(s, spec["bundle_hash"])
        started = time.perf_counter()
        weights = verify_weights(s, model, Path(weights_root) if weights_root else None, actor)
        anc = governed(store, s, model.id)
        context = deployment_context(spec)
        lineage = evaluate_lineage(anc.graph, anc.target, bundle, _declared(bundle, context), prefix=[dep.id], ancestry=anc)
        evidence, eval_ids = _evaluation_metrics(s, model)
        metrics = evidence["metrics"]
        gates = bundle.check_gates({"eval": evidence}) if bundle.gates else None
        approvers = _approvers(s, dep)
        needed = 2 if spec["environment"] == "production" else 1
        denials = list(lineage.denials)
        deciding = list(lineage.deciding)
        if not weights["passed"]:
            deciding.append("assay:weights-hash")
            denials.extend({"check": "weights", "rule": "assay:weights-hash", "asset": model.id, "reason": p,
                            "path": [dep.id, model.id]} for p in weights["problems"])
        if gates is not None and not gates.passed:
            for v in gates.verdicts:
                if not v.passed:  # failed, or inconclusive: not passed, with the evidence it lacks
                    deciding.append(v.id)
                    reason = v.reason if v.verdict != "inconclusive" else (
                        f"inconclusive: {v.reason}; evidence missing: {', '.join(v.missing) or 'see the gate'}")
                    denials.append({"check": "gates", "rule": v.id, "asset": model.id, "reason": reason,
                                    "verdict": v.verdict, "missing": v.missing,
                                    "evaluations": eval_ids, "path": [dep.id, model.id]})
        if len(approvers) < needed:
            deciding.append("assay:approvals")
            denials.append({"check": "approvals", "rule": "assay:approvals", "asset": dep.id,
                            "reason": f"{spec['environment']} needs {needed} distinct approver(s) other than the "
                                      f"requester {spec.get('requested_by')}; has {len(approvers)} ({', '.join(approvers) or 'none'})",
                            "path": [dep.id]})
        allowed = not denials
        if allowed:
            deciding = sorted(set(lineage.allow_rules) | {v.id for v in (gates.verdicts if gates else [])}) or [PURPOSE_LIMITATION]
        summary = ("ALLOW" if allowed else "DENY") + f" {dep.id} ({spec['purpose']} on {spec['surface']}): " + (
            "every check passed" if allowed else "; ".join(f"[{d['rule']}] {d['reason']}" for d in denials[:3]))
        detail = {
            "allowed": allowed, "deployment": dep.id, "model": model.id, "bundle_hash": bundle.hash,
            "bundle": f"{bundle.name}@{bundle.version}", "deciding": deciding, "denials": denials,
            "checks": {
                "purposes": {"allowed": lineage.allowed, "effective_purposes": lineage.effective_purposes,
                             "effective_restrictions": lineage.effective_restrictions,
                             "allow_rules": lineage.allow_rules, "ancestry_size": lineage.ancestry_size},
                "gates": None if gates is None else {"passed": gates.passed, "evaluations": eval_ids, "metrics": metrics,
                                                     "verdicts": [{"id": v.id, "passed": v.passed, "verdict": v.verdict,
                                                                   "reason": v.reason, "missing": v.missing, "notes": v.notes}
                                                                  for v in gates.verdicts]},
                "weights": weights,
                "approvals": {"needed": needed, "approvers": approvers, "requested_by": spec.get("requested_by")},
            },
            "checked_in_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        vid = f"verdict-{uuid.uuid4()}"
        detail["id"] = vid
        detail["summary"] = summary
        if record:
            s.add(Verdict(id=vid, deployment_id=dep.id, allowed=allowed, bundle_hash=bundle.hash, summary=summary,
                          detail=detail, checked_by=actor.name))
            audit(s, actor, "deploy_check", dep.id, {"verdict": vid, "allowed": allowed, "bundle_hash": bundle.hash})
    if record:
        detail["trace"] = append_to_trace(verdict_event(detail))
        detail["openlineage"] = _emit_verdict(store, detail)
    return detail


def _emit_verdict(store: Store, detail: dict[str, Any]) -> str:
    """Best effort: the verdict is committed already; say where the RunEvent went or why not."""
    from assay.errors import AssayError

    from .openlineage import emit, verdict_run_event

    try:
        return "emitted to " + emit([verdict_run_event(store, detail)])
    except AssayError as e:
        return f"not emitted: {e.message}"


DEPLOYMENT_FIELDS = tuple(n.split(".", 1)[1] for n in PURPOSE.attributes if n.startswith("deployment."))


def deployment_context(spec: dict[str, Any]) -> dict[str, Any]:
    """``deployment.*`` of the purposes section: the request's fields the gate declares it supplies
    (``assay.policy.supplied.PURPOSE``), so a bundle can read exactly these."""
    return {name: spec[name] for name in DEPLOYMENT_FIELDS}


def _declared(bundle: Any, context: dict[str, Any]) -> dict[str, Any]:
    """Only the deployment attributes the bundle declares (a bundle may not read undeclared ones)."""
    declared = getattr(bundle, "attributes", {}).get("purposes", {}) if isinstance(getattr(bundle, "attributes", None), dict) else {}
    names = {k.split(".", 1)[1] for k in declared if k.startswith("deployment.")}
    return {k: v for k, v in context.items() if not names or k in names} if names else context


def verdict_event(detail: dict[str, Any]) -> Event:
    return Event(kind="deploy_verdict", ts=time.time(), subject=detail["deployment"], bundle_hash=detail["bundle_hash"],
                 payload={"allowed": detail["allowed"], "deciding": detail["deciding"], "verdict": detail["id"],
                          "model": detail["model"], "denials": [{k: d.get(k) for k in ("check", "rule", "asset", "path")}
                                                                for d in detail["denials"]]})


def append_to_trace(event: Event) -> str:
    """Append the verdict to the decision trace (``ASSAY_HOME/trace``) when the trace part is installed.

    Returns what happened so the caller can show it. The verdict is already committed to the
    store; if another process holds the trace's writer lock the event is not waited for.
    """
    try:
        from assay.trace import TraceLog
    except ImportError:
        return "trace not installed; verdict kept in the store only"
    from assay.config import settings

    lock_path = settings().home / "trace" / ".writer.lock"
    if lock_path.exists():
        import fcntl

        with open(lock_path, "a") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(probe, fcntl.LOCK_UN)
            except BlockingIOError:
                return "trace busy (another process is writing it); verdict kept in the store"
    log = TraceLog.open()
    try:
        result = log.append([event])
    finally:
        log.close()
    size = getattr(result, "tree_size", None) or getattr(result, "size", None)
    return f"appended to trace{f' (tree size {size})' if size else ''}"


def verdicts_for(store: Store, deployment: str) -> list[dict[str, Any]]:
    with store.session() as s:
        dep = resolve(s, deployment, "deployment")
        rows = s.scalars(sa.select(Verdict).where(Verdict.deployment_id == dep.id).order_by(Verdict.created_at)).all()
        return [r.detail | {"created_at": r.created_at.isoformat(), "checked_by": r.checked_by} for r in rows]


def deployment_view(store: Store, deployment: str) -> dict[str, Any]:
    with store.session() as s:
        dep = resolve(s, deployment, "deployment")
        out = asset_view(s, dep, with_files=False)
        out["approvals"] = _approvers(s, dep)
        return out


# ---------------------------------------------------------------- rollback


def rollback_deployment(store: Store, actor: Actor, deployment: str, to_version: str | int | None = None,
                        reason: str = "") -> dict[str, Any]:
    """Roll a deployment back to an earlier version of itself: a NEW version of the deployment
    (nothing is updated in place) that copies the target version's model, surface, purpose and
    bundle, and records what it rolled back from, to and why. Audited; the verdict history of the
    earlier versions stays as it was."""
    actor.require("approver", "rolling a deployment back")
    with store.session() as s:
        current = resolve(s, deployment, "deployment")
        versions = s.scalars(sa.select(Asset).where(Asset.kind == "deployment", Asset.namespace == current.namespace,
                                                    Asset.name == current.name).order_by(Asset.version)).all()
        latest = versions[-1]
        if to_version is None:
            earlier = [v for v in versions if v.version < latest.version and not (v.spec or {}).get("rolled_back_from")]
            if not earlier:
                raise BadInput(f"{latest.id} has no earlier version to roll back to")
            target = earlier[-1]
        else:
            wanted = int(str(to_version).rsplit("@", 1)[-1])
            matches = [v for v in versions if v.version == wanted]
            if not matches or wanted >= latest.version:
                raise BadInput(f"{current.name}: version {wanted} is not an earlier version (latest is {latest.version})")
            target = matches[0]
        from .registry import _new_asset

        spec = {**(target.spec or {}), "rolled_back_from": latest.id, "rolled_back_to": target.id,
                "rollback_reason": reason or "unspecified", "requested_by": actor.name,
                "requested_by_accountable": actor.accountable}
        new = _new_asset(s, actor, kind="deployment", name=current.name, namespace=current.namespace,
                         purposes=target.purposes, restrictions=target.restrictions, subject_id=target.subject_id, spec=spec)
        audit(s, actor, "rollback_deployment", new.id, {"from": latest.id, "to": target.id, "reason": reason})
        return asset_view(s, new, with_files=False)
