"""The deployment gate: purposes over the model's whole lineage, release gates over its
evaluations, the weights on disk against their registered hashes, and approvals by role.

Semantics a reviewer can rely on:

- **Purpose limitation is built in**: the deployment's purpose must be one that every dataset
  upstream of the model allows (rule ``assay:purpose-limitation``), whatever the bundle says.
- The bundle's ``purposes`` section is evaluated once for the model's effective terms and once
  for every upstream dataset (with the restrictions of that dataset that still reach the model),
  so a denial names the dataset that caused it and the lineage path to it. Deny by default, a
  deny beats an allow (``Bundle.check_purposes``).
- The bundle's ``gates`` run over the metrics of evaluations made on exactly the registered weights.
- Weights are re-hashed on disk at check time; any difference denies.
- Production needs two distinct approvers (role approver or admin), never the requester; any
  other environment needs one.
- Every verdict is stored with the bundle hash and appended to the trace as an
  ``Event(kind="deploy_verdict")`` when the trace part is installed.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from assay.errors import BadInput
from assay.records import Event
from assay.store import Store
from assay.store.schema import Approval, Asset, AssetFile, PolicyBundleRow, Verdict

from .propagation import LineageGraph, live_restrictions, propagate
from .registry import (
    Actor,
    Forbidden,
    NotFound,
    _name,
    ancestry_graph,
    asset_view,
    audit,
    resolve,
    sha256_file,
)

PURPOSE_LIMITATION = "assay:purpose-limitation"
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


class _Paths:
    """Shortest paths from the target back to any ancestor; predecessor lists built once."""

    def __init__(self, graph: LineageGraph, target: int):
        self.graph, self.target = graph, target
        self._preds: dict[int, list[tuple[int, int]]] | None = None
        self._trees: dict[bytes, dict[int, tuple[int, int]]] = {}

    def _tree(self, avoid: np.ndarray | None) -> dict[int, tuple[int, int]]:
        """One breadth-first tree back from the target per lift mask, built on first use."""
        key = b"" if avoid is None else avoid.tobytes()
        if key in self._trees:
            return self._trees[key]
        g = self.graph
        if self._preds is None:
            self._preds = {}
            for k, (p, c) in enumerate(zip(g.parents.tolist(), g.children.tolist(), strict=True)):
                self._preds.setdefault(c, []).append((p, k))
        blocked = None if avoid is None else (g.edge_lift & avoid).any(axis=1).tolist()
        back: dict[int, tuple[int, int]] = {self.target: (-1, -1)}
        queue = deque([self.target])
        while queue:
            node = queue.popleft()
            for p, k in self._preds.get(node, ()):
                if p in back or (blocked is not None and blocked[k]):
                    continue
                back[p] = (node, k)
                queue.append(p)
        self._trees[key] = back
        return back

    def to(self, source: int, avoid: np.ndarray | None = None) -> list[str]:
        g = self.graph
        back = self._tree(avoid)
        if source not in back:
            return self.to(source) if avoid is not None else []
        out, node = [g.ids[source]], source
        while node != self.target:
            child, k = back[node]
            if g.edge_run[k]:
                out.append(f"run:{g.edge_run[k]}")
            out.append(g.ids[child])
            node = child
        return out[::-1]


def _has_bit(rows: np.ndarray, bit: int) -> np.ndarray:
    return ((rows[:, bit // 64] >> np.uint64(bit % 64)) & np.uint64(1)).astype(bool)


def evaluate_lineage(graph: LineageGraph, target: int, bundle: Any, deployment: dict[str, Any],
                     prefix: list[str] | None = None) -> LineageVerdict:
    """Purpose verdict for deploying node ``target`` of ``graph`` (its ancestry) under ``bundle``."""
    terms = propagate(graph)
    live = live_restrictions(graph, target, terms.level)
    paths = _Paths(graph, target)
    prefix = prefix or []
    purpose = deployment.get("purpose", "")
    effective_p = graph.purposes.decode(terms.allowed[target])
    effective_r = graph.restrictions.decode(terms.restrictions[target])
    verdict = LineageVerdict(allowed=True, effective_purposes=effective_p, effective_restrictions=effective_r,
                             ancestry_size=graph.n)
    roots = np.ones(graph.n, dtype=bool)
    roots[graph.children] = False

    # 1. built-in purpose limitation: every upstream dataset must allow the purpose.
    if purpose not in effective_p:
        declares = graph.declares_purposes | roots
        bit = graph.purposes.index.get(purpose)
        lacking = declares if bit is None else declares & ~_has_bit(graph.own_purposes, bit)
        blockers = np.flatnonzero(lacking)
        verdict.allowed = False
        verdict.deciding.append(PURPOSE_LIMITATION)
        for i in blockers[:MAX_PATHS].tolist():
            verdict.denials.append({
                "check": "purposes", "rule": PURPOSE_LIMITATION, "asset": graph.ids[i],
                "reason": f"{graph.ids[i]} allows only {graph.purposes.decode(graph.own_purposes[i]) or 'no purposes'}, "
                          f"not {purpose!r}; a derived model may be used only for purposes every input allows",
                "path": prefix + paths.to(i),
            })
        if blockers.size > MAX_PATHS:
            verdict.denials.append({"check": "purposes", "rule": PURPOSE_LIMITATION,
                                    "reason": f"and {blockers.size - MAX_PATHS} more upstream assets", "path": []})

    # 2. the bundle's purposes section, once per distinct (purposes, surviving restrictions).
    if bundle is not None and bundle.purposes:
        surviving = graph.own_restrictions & live
        contributors = np.flatnonzero(roots | surviving.any(axis=1))
        contexts: dict[bytes, tuple[list[int], dict[str, Any]]] = {}
        for i in contributors.tolist():
            if i == target:
                continue
            key = terms.allowed[i].tobytes() + b"|" + surviving[i].tobytes()
            if key not in contexts:
                contexts[key] = ([], {"purposes": graph.purposes.decode(terms.allowed[i]),
                                      "restrictions": graph.restrictions.decode(surviving[i])})
            contexts[key][0].append(i)
        # the model's own effective terms last: its denial is shown only when no upstream one explains it
        contexts[b"target"] = ([target], {"purposes": effective_p, "restrictions": effective_r})
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
            if key == b"target" and set(result.deciding) <= set(verdict.deciding):
                continue
            for rule in result.deciding:
                if rule not in verdict.deciding:
                    verdict.deciding.append(rule)
            rule_key = ",".join(result.deciding)
            for i in members:
                if shown.get(rule_key, 0) >= MAX_PATHS:
                    hidden[rule_key] = hidden.get(rule_key, 0) + 1
                    continue
                shown[rule_key] = shown.get(rule_key, 0) + 1
                avoid = surviving[i] if key != b"target" else None
                verdict.denials.append({
                    "check": "purposes", "rule": ",".join(result.deciding), "asset": graph.ids[i],
                    "reason": "; ".join(result.reasons),
                    "terms": {"purposes": ctx["purposes"], "restrictions": ctx["restrictions"]},
                    "path": prefix + paths.to(i, avoid),
                })
        for rule_key, count in hidden.items():
            verdict.denials.append({"check": "purposes", "rule": rule_key, "asset": None, "path": [],
                                    "reason": f"and {count} more upstream datasets denied by the same rule"})
        verdict.allow_rules = sorted(allow_rules)
    elif bundle is not None and not bundle.purposes:
        verdict.allowed = False
        verdict.deciding.append("default-deny")
        verdict.denials.append({"check": "purposes", "rule": "default-deny", "asset": graph.ids[target],
                                "reason": "the bundle has no purposes rule that allows this use (deny by default)",
                                "path": [*prefix, graph.ids[target]]})
    return verdict


# ---------------------------------------------------------------- bundles kept by hash


def _bundle_files(path: Path) -> dict[str, str]:
    if path.is_file():
        return {path.name: path.read_text(encoding="utf-8")}
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_text(encoding="utf-8")
                for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")}
    raise BadInput(f"policy bundle {path}: no such file or folder")


def load_policy(path: str | Path):
    from assay.errors import require_extra

    policy = require_extra("assay.policy", "all")
    return policy.load_bundle(Path(path))


def _stored_bundle(session, bundle_hash: str):
    row = session.get(PolicyBundleRow, bundle_hash)
    if row is None:
        raise NotFound(f"policy bundle {bundle_hash[:12]}… is not stored; pass --bundle")
    with tempfile.TemporaryDirectory(prefix="assay-bundle-") as tmp:
        for rel, text in row.files.items():
            dest = Path(tmp, rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
        only = Path(tmp, next(iter(row.files))) if len(row.files) == 1 else Path(tmp)
        bundle = load_policy(only)
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
            bundle = load_policy(Path(tmp, next(iter(files))) if len(files) == 1 else Path(tmp))
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
                                                "requested_by": actor.name})
        return asset_view(s, dep, with_files=False)


def approve_deployment(store: Store, actor: Actor, deployment: str, comment: str = "") -> dict[str, Any]:
    """An approval by one person with role approver or admin; never the requester, never twice."""
    actor.require("approver", "approving a deployment")
    with store.session() as s:
        dep = resolve(s, deployment, "deployment")
        if dep.spec.get("requested_by") == actor.name:
            raise Forbidden(f"{actor.name} requested {dep.id} and may not approve it")
        if s.scalar(sa.select(Approval).where(Approval.subject_id == dep.id, Approval.approver == actor.name)):
            raise BadInput(f"{actor.name} has already approved {dep.id}; a second approval must come from someone else")
        s.add(Approval(subject_kind="deployment", subject_id=dep.id, approver=actor.name, role=actor.role, comment=comment))
        audit(s, actor, "approve_deployment", dep.id, {"comment": comment})
        s.flush()
        return {"deployment": dep.id, "approved_by": actor.name, "approvals": _approvers(s, dep)}


def _approvers(s, dep: Asset) -> list[str]:
    rows = s.scalars(sa.select(Approval).where(Approval.subject_kind == "deployment", Approval.subject_id == dep.id))
    return sorted(a.approver for a in rows if a.role in APPROVER_ROLES and a.approver != dep.spec.get("requested_by"))


def verify_weights(s, model: Asset, root: Path | None = None) -> dict[str, Any]:
    """Re-hash every registered weights file on disk."""
    base = root or (Path(model.uri) if model.uri else None)
    files = s.scalars(sa.select(AssetFile).where(AssetFile.asset_id == model.id).order_by(AssetFile.path)).all()
    problems = []
    if base is None or not files:
        problems.append(f"{model.id} has no local weights to verify (uri {model.uri!r})")
    for f in files:
        p = base / f.path if base else None
        if p is None or not p.is_file():
            problems.append(f"{f.path}: missing on disk at {p}")
            continue
        actual = sha256_file(p)
        if actual != f.sha256:
            problems.append(f"{p}: sha256 {actual} differs from the registered {f.sha256} (weights changed after registration)")
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
        weights = verify_weights(s, model, Path(weights_root) if weights_root else None)
        graph = ancestry_graph(store, s, model.id)
        context = {"purpose": spec["purpose"], "surface": spec["surface"], "region": spec["region"],
                   "environment": spec["environment"]}
        lineage = evaluate_lineage(graph, graph.index[model.id], bundle, _declared(bundle, context), prefix=[dep.id])
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
                "rollback_reason": reason or "unspecified", "requested_by": actor.name}
        new = _new_asset(s, actor, kind="deployment", name=current.name, namespace=current.namespace,
                         purposes=target.purposes, restrictions=target.restrictions, subject_id=target.subject_id, spec=spec)
        audit(s, actor, "rollback_deployment", new.id, {"from": latest.id, "to": target.id, "reason": reason})
        return asset_view(s, new, with_files=False)
