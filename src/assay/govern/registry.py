"""The registry: datasets, models, evaluation runs, transformations and lineage runs.

Every write happens inside one store transaction together with its audit entry, so a failure
leaves nothing half-written. Assets are versioned and never updated in place: registering an
existing name again makes the next version.

Each version of a dataset keeps the terms it was registered with: an ordinary new version does
not rewrite what was decided about models trained on an older one. A **withdrawal** (a new
version registered with ``withdrawal=<reason>``) binds every earlier version as well: their
purposes narrow to the withdrawal's and they take on its restrictions, so every descendant's
verdict changes, and the withdrawal is recorded (the version's spec, the audit log) and named in
every explanation. ``assay.govern.lineage`` computes the terms; docs/govern.md states the rules.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from assay.errors import AssayError, BadInput
from assay.records import EvaluationResult
from assay.store import Store
from assay.store.schema import (
    Approval,
    Asset,
    AssetFile,
    AuditEntry,
    RestrictionLift,
    Run,
    RunIO,
    Transformation,
)

from .propagation import GraphBuilder, LineageCycle, Paths

ROLES = ("viewer", "engineer", "approver", "admin")
KINDS = ("dataset", "model", "evaluation", "deployment")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:+-]{0,254}$")
TERM_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}(=[A-Za-z0-9_.:/-]{1,128})?$")
STRUCTURED_RESTRICTIONS = ("contains_minors", "consent_scope", "region", "retention_days")


class Forbidden(AssayError):
    """The actor's role or identity may not do this (HTTP 403)."""


class NotFound(BadInput):
    """An id that names nothing in the registry (HTTP 404)."""


@dataclass(frozen=True)
class Actor:
    """Who is acting, with which role, from where (for access checks and the audit log)."""

    name: str
    role: str
    source: str = "cli"

    def at_least(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def require(self, role: str, action: str) -> None:
        if not self.at_least(role):
            raise Forbidden(f"{self.name} has role {self.role!r}; {action} needs role {role!r} or higher")


def local_actor() -> Actor:
    """The person at the terminal: full rights on their own local store."""
    import getpass

    try:
        name = getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry in some containers
        name = "local"
    return Actor(name=name, role="admin", source="cli")


# ---------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_manifest(root: Path, files: Sequence[str | Path] | None = None) -> list[dict[str, Any]]:
    """``[{path, sha256, size}]`` for a file, every file under a folder, or the named files."""
    root = Path(root)
    if files:
        paths = [root / f for f in files]
    elif root.is_file():
        paths = [root]
        root = root.parent
    elif root.is_dir():
        paths = sorted(p for p in root.rglob("*") if p.is_file())
    else:
        raise BadInput(f"{root}: no such file or folder")
    out = []
    for p in paths:
        if not p.is_file():
            raise BadInput(f"{p}: no such file")
        out.append({"path": p.relative_to(root).as_posix(), "sha256": sha256_file(p), "size": p.stat().st_size})
    return out


def manifest_hash(entries: Iterable[Mapping[str, Any]]) -> str:
    """sha256 over the sorted (path, sha256) pairs: the content identity of a dataset or model."""
    pairs = sorted((e["path"], e["sha256"]) for e in entries)
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()


# ---------------------------------------------------------------- validation


def _name(value: str, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise BadInput(f"{what} {value!r} is not a valid name (letters, digits and ._/:+- ; at most 255)")
    return value


def normalise_terms(values: Iterable[str] | None, what: str) -> list[str]:
    out = set()
    for v in values or ():
        if not isinstance(v, str) or not TERM_RE.match(v):
            raise BadInput(f"{what} {v!r} is not valid: lower-case words like 'research' or 'region=eu'")
        out.add(v)
    return sorted(out)


def restriction_terms(restrictions: Iterable[str] | None = None, *, contains_minors: bool = False,
                      consent_scope: str | None = None, region: str | None = None,
                      retention_days: int | None = None) -> list[str]:
    """Structured restrictions become terms a policy can test: ``contains_minors``,
    ``consent_scope=research``, ``region=eu``, ``retention_days=30``."""
    terms = list(restrictions or ())
    if contains_minors:
        terms.append("contains_minors")
    if consent_scope:
        terms.append(f"consent_scope={consent_scope}")
    if region:
        terms.append(f"region={region}")
    if retention_days is not None:
        if int(retention_days) < 0:
            raise BadInput(f"retention_days must be >= 0, got {retention_days}")
        terms.append(f"retention_days={int(retention_days)}")
    return normalise_terms(terms, "restriction")


# ---------------------------------------------------------------- rows <-> dicts


def make_asset_id(kind: str, namespace: str, name: str, version: int) -> str:
    return f"{kind}:{name}@{version}" if namespace == "assay" else f"{kind}:{namespace}/{name}@{version}"


def audit(session: Session, actor: Actor, action: str, target: str, detail: Mapping[str, Any] | None = None) -> None:
    session.add(AuditEntry(actor=actor.name, role=actor.role, source=actor.source, action=action,
                           target=target, detail=dict(detail or {})))


def asset_view(session: Session, asset: Asset, with_files: bool = True) -> dict[str, Any]:
    out = {
        "id": asset.id, "kind": asset.kind, "namespace": asset.namespace, "name": asset.name,
        "version": asset.version, "uri": asset.uri, "owner": asset.owner, "licence": asset.licence,
        "purposes": list(asset.purposes), "restrictions": list(asset.restrictions),
        "content_hash": asset.content_hash, "subject_id": asset.subject_id, "spec": asset.spec,
        "created_at": asset.created_at.isoformat() if asset.created_at else None,
        "created_by": asset.created_by,
    }
    if with_files:
        files = session.scalars(sa.select(AssetFile).where(AssetFile.asset_id == asset.id).order_by(AssetFile.path))
        out["files"] = [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in files]
    return out


def resolve(session: Session, ref: str, kind: str | None = None) -> Asset:
    """An asset by exact id (``model:ranker@2``), or the latest version of ``kind:name`` / ``name``."""
    if not isinstance(ref, str) or not ref:
        raise NotFound("an asset id is required")
    if len(ref) > 512 or any(ord(c) < 32 for c in ref):
        raise NotFound(f"no asset {ref[:80]!r}: ids are at most 512 printable characters")
    asset = session.get(Asset, ref)
    if asset is not None:
        if kind and asset.kind != kind:
            raise BadInput(f"{ref} is a {asset.kind}, not a {kind}")
        return asset
    want_kind, name = kind, ref
    if ":" in ref and ref.split(":", 1)[0] in KINDS:
        want_kind, name = ref.split(":", 1)
        if kind and want_kind != kind:
            raise BadInput(f"{ref} is a {want_kind}, not a {kind}")
    namespace = "assay"
    query = sa.select(Asset).where(Asset.name == name, Asset.namespace == namespace)
    if want_kind:
        query = query.where(Asset.kind == want_kind)
    latest = session.scalars(query.order_by(Asset.version.desc()).limit(1)).first()
    if latest is None:
        raise NotFound(f"no {want_kind or 'asset'} {ref!r} in the registry",
                       hint="list them with `assay lineage show --all` or register it first")
    return latest


def latest(store: Store, ref: str) -> dict[str, Any] | None:
    """The view of what ``ref`` names now (its latest version), or None when nothing is
    registered under it: how a registering part finds out whether identical content is there."""
    with store.session() as s:
        try:
            return asset_view(s, resolve(s, ref))
        except BadInput:  # NotFound is a BadInput
            return None


def _next_version(session: Session, kind: str, namespace: str, name: str) -> int:
    current = session.scalar(sa.select(sa.func.max(Asset.version)).where(
        Asset.kind == kind, Asset.namespace == namespace, Asset.name == name))
    return (current or 0) + 1


def _new_asset(session: Session, actor: Actor, *, kind: str, name: str, namespace: str = "assay",
               purposes: Sequence[str] = (), restrictions: Sequence[str] = (), uri: str | None = None,
               owner: str | None = None, licence: str | None = None, files: Sequence[Mapping[str, Any]] = (),
               subject_id: str | None = None, spec: Mapping[str, Any] | None = None,
               content_hash: str | None = None, make_id: Callable[[int], str] | None = None) -> Asset:
    """A new version of ``kind:namespace/name``. ``make_id`` (version -> id) replaces the name
    check and the usual id: OpenLineage names are free text, stored and identified by ``openlineage``."""
    if make_id is None:
        _name(name, f"{kind} name")
    version = _next_version(session, kind, namespace, name)
    asset = Asset(
        id=make_id(version) if make_id else make_asset_id(kind, namespace, name, version), kind=kind, namespace=namespace, name=name,
        version=version, uri=uri, owner=owner or actor.name, licence=licence,
        purposes=normalise_terms(purposes, "purpose"), restrictions=normalise_terms(restrictions, "restriction"),
        content_hash=content_hash or (manifest_hash(files) if files else None), subject_id=subject_id,
        spec=dict(spec or {}), created_by=actor.name,
    )
    session.add(asset)
    session.flush()
    for f in files:
        session.add(AssetFile(asset_id=asset.id, path=f["path"], sha256=f["sha256"], size=int(f.get("size", 0))))
    audit(session, actor, f"register_{kind}", asset.id, {"purposes": asset.purposes, "restrictions": asset.restrictions,
                                                            "content_hash": asset.content_hash})
    return asset


# ---------------------------------------------------------------- registration


def register_dataset(store: Store, actor: Actor, *, name: str, uri: str, purposes: Sequence[str],
                     restrictions: Sequence[str] = (), owner: str | None = None, licence: str | None = None,
                     schema: Mapping[str, Any] | None = None, files: Sequence[Mapping[str, Any]] | None = None,
                     namespace: str = "assay", withdrawal: str | None = None) -> dict[str, Any]:
    """Register (a new version of) a dataset. Local ``uri`` paths are hashed file by file.

    With ``withdrawal`` (the reason, e.g. "users withdrew consent for ads on 2026-03-01") the new
    version is a consent withdrawal: its terms also bind every earlier version of the dataset, and
    so every model trained on one (docs/govern.md, "Versions and consent withdrawal")."""
    actor.require("engineer", "registering a dataset")
    if withdrawal is not None and (not isinstance(withdrawal, str) or not withdrawal.strip() or len(withdrawal) > 2000):
        raise BadInput("a withdrawal needs its reason: 1 to 2000 characters saying whose consent changed and when")
    if "\x00" in uri:
        raise BadInput("dataset uri contains a NUL byte")
    if files is None:
        path = Path(uri)
        if not path.exists():
            raise BadInput(f"dataset uri {uri!r} is not a local file or folder; pass the file manifest explicitly")
        files = file_manifest(path)
        uri = str(path.resolve())
    for f in files:
        if not re.fullmatch(r"[0-9a-f]{64}", str(f.get("sha256", ""))):
            raise BadInput(f"manifest entry {f.get('path')!r}: sha256 must be 64 lower-case hex digits")
    with store.session() as s:
        spec: dict[str, Any] = {"schema": dict(schema or {})}
        if withdrawal is not None:
            earlier = s.scalars(sa.select(Asset.id).where(Asset.kind == "dataset", Asset.namespace == namespace,
                                                          Asset.name == name).order_by(Asset.version)).all()
            if not earlier:
                raise BadInput(f"dataset {name!r} has no earlier version whose consent could be withdrawn",
                               hint="register it normally; a withdrawal narrows versions registered before it")
            spec["withdrawal"] = {"reason": withdrawal.strip(), "binds": list(earlier)}
        asset = _new_asset(s, actor, kind="dataset", name=name, namespace=namespace, purposes=purposes,
                           restrictions=restrictions, uri=uri, owner=owner, licence=licence, files=files, spec=spec)
        if withdrawal is not None:
            audit(s, actor, "withdraw_consent", asset.id, {"reason": withdrawal.strip(), "binds": spec["withdrawal"]["binds"],
                                                          "purposes": asset.purposes, "restrictions": asset.restrictions})
        return asset_view(s, asset)


def register_model(store: Store, actor: Actor, *, name: str, weights: Sequence[str | Path] | None = None,
                   files: Sequence[Mapping[str, Any]] | None = None, uri: str | None = None,
                   framework: str = "", trained_on: Sequence[str] = (), training_run: str | None = None,
                   purposes: Sequence[str] = (), restrictions: Sequence[str] = (), owner: str | None = None,
                   licence: str | None = None, transformation: str | None = None) -> dict[str, Any]:
    """Register a model: every weights file by sha256, its framework, and the training run that
    made it (a lineage run from ``trained_on`` datasets to this model).

    ``weights`` are what a deployment will load: each path is kept as given (made absolute, links
    not resolved), a folder stands for every file under it, and the file each path resolves to
    now is recorded, so the gate can tell when a link is re-pointed (``weights_layout``)."""
    actor.require("engineer", "registering a model")
    layout: dict[str, Any] | None = None
    if files is None:
        if not weights:
            raise BadInput("a model needs at least one weights file or folder")
        if any("\x00" in str(w) for w in weights) or (uri and "\x00" in uri):
            raise BadInput("a weights path contains a NUL byte")
        given = [Path(os.path.abspath(w)) for w in weights]
        root = Path(os.path.abspath(uri)) if uri else Path(_common_root(given))
        rels, folders = _weights_files(root, given)
        files = file_manifest(root, rels)
        layout = weights_layout(root, rels, folders)
        uri = str(root)
    with store.session() as s:
        inputs = [resolve(s, ref) for ref in trained_on]
        run_name = training_run or f"train-{name}"
        asset = _new_asset(s, actor, kind="model", name=name, purposes=purposes, restrictions=restrictions,
                           uri=uri, owner=owner, licence=licence, files=files,
                           spec={"framework": framework, "training_run": run_name,
                                 "declares_purposes": bool(purposes), **({"weights": layout} if layout else {})})
        if inputs:
            _record_run(s, actor, job_name=run_name, kind="train", inputs=[a.id for a in inputs],
                        outputs=[asset.id], transformation_id=transformation)
        return asset_view(s, asset)


def _common_root(paths: Sequence[Path]) -> str:
    common = os.path.commonpath([str(p) for p in paths])
    return str(Path(common).parent) if Path(common).is_file() else common


def files_under(folder: Path) -> list[str]:
    """Every file under ``folder`` as a relative posix path, following links as a loader does
    (each real folder is walked once, so a link back up cannot loop)."""
    out, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        out.extend(Path(dirpath, f).relative_to(folder).as_posix() for f in filenames if Path(dirpath, f).is_file())
    return sorted(out)


def _weights_files(root: Path, given: Sequence[Path]) -> tuple[list[str], list[str]]:
    """The files a deployment will load, relative to ``root``: each file given and every file
    under each folder given; and the folders given (relative)."""
    files, folders = set(), set()
    for p in given:
        try:
            rel = p.relative_to(root)
        except ValueError:
            raise BadInput(f"weights {p} is not under the model folder {root}") from None
        if p.is_dir():
            found = files_under(p)
            if not found:
                raise BadInput(f"weights folder {p} has no files")
            folders.add(rel.as_posix())
            files.update((rel / f).as_posix() for f in found)
        elif p.is_file():
            files.add(rel.as_posix())
        else:
            raise BadInput(f"weights {p} does not exist (neither a file nor a folder)")
    return sorted(files), sorted(folders)


def weights_layout(root: Path, rels: Sequence[str], folders: Sequence[str]) -> dict[str, Any]:
    """What the gate re-checks beside the hashes: the folders given (their file lists must not
    change) and, for each file whose path goes through a link, the file it resolved to."""
    targets = {}
    for rel in rels:
        path = os.path.abspath(root / rel)
        real = os.path.realpath(path)
        if real != path:
            targets[rel] = real
    return {"folders": list(folders), "targets": targets}


def register_evaluation(store: Store, actor: Actor, result: EvaluationResult | Mapping[str, Any],
                        model: str) -> dict[str, Any]:
    """Record an evaluation run of ``model``; its model hashes must be exactly the registered ones."""
    actor.require("engineer", "registering an evaluation")
    if isinstance(result, Mapping):
        try:
            result = EvaluationResult(**{**result, "intervals": {k: tuple(v) for k, v in dict(result.get("intervals", {})).items()}})
        except TypeError as e:
            raise BadInput(f"not an evaluation result: {e}") from e
    with store.session() as s:
        m = resolve(s, model, "model")
        registered = {f.sha256 for f in s.scalars(sa.select(AssetFile).where(AssetFile.asset_id == m.id))}
        claimed = set(result.model_hashes.values())
        if claimed != registered:
            raise BadInput(
                f"evaluation {result.run_id!r} ran on weights {sorted(claimed)} but {m.id} is registered with "
                f"{sorted(registered)}: hash mismatch",
                hint="evaluate the exact registered weights, or register the new weights as a new model version",
            )
        dataset_ids = []
        for ds_name, digest in result.dataset_hashes.items():
            rows = s.scalars(sa.select(Asset).where(Asset.kind == "dataset", Asset.name == ds_name)).all()
            if rows:
                match = [a for a in rows if a.content_hash == digest]
                if not match:
                    raise BadInput(f"evaluation {result.run_id!r}: dataset {ds_name!r} hash {digest[:12]}… matches no "
                                   f"registered version ({', '.join(a.id for a in rows)}): hash mismatch")
                dataset_ids.append(match[-1].id)
        payload = result.to_dict()
        asset = _new_asset(s, actor, kind="evaluation", name=f"{result.suite}:{_safe(result.run_id)}"[:255],
                           subject_id=m.id, spec={"result": payload, "model_id": m.id, "suite": result.suite},
                           content_hash=hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest())
        _record_run(s, actor, job_name=f"evaluate-{result.suite}", kind="evaluate",
                    inputs=[m.id, *dataset_ids], outputs=[asset.id], run_id=f"eval-{uuid.uuid4()}")
        return asset_view(s, asset, with_files=False)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "-", text) or "run"


def register_transformation(store: Store, actor: Actor, *, name: str, lifts: Sequence[str],
                            description: str = "") -> dict[str, Any]:
    """Register a transformation (e.g. anonymisation) that may lift restrictions once approved."""
    actor.require("engineer", "registering a transformation")
    lifts = normalise_terms(lifts, "restriction")
    if not lifts:
        raise BadInput("a transformation must name at least one restriction it lifts")
    with store.session() as s:
        _name(name, "transformation name")
        n = s.scalar(sa.select(sa.func.count()).select_from(Transformation).where(Transformation.name == name)) or 0
        tid = f"{name}@{n + 1}"
        s.add(Transformation(id=tid, name=name, lifts=lifts, description=description, created_by=actor.name))
        audit(s, actor, "register_transformation", tid, {"lifts": lifts})
        return {"id": tid, "name": name, "lifts": lifts, "description": description, "approved": False}


def approve_transformation(store: Store, actor: Actor, transformation_id: str, comment: str = "") -> dict[str, Any]:
    actor.require("approver", "approving a transformation")
    with store.session() as s:
        t = s.get(Transformation, transformation_id)
        if t is None:
            raise NotFound(f"no transformation {transformation_id!r}")
        if t.created_by == actor.name:
            raise Forbidden(f"{actor.name} registered {transformation_id} and may not approve it")
        if s.scalar(sa.select(Approval).where(Approval.subject_id == t.id, Approval.approver == actor.name)):
            raise BadInput(f"{actor.name} has already approved {t.id}")
        s.add(Approval(subject_kind="transformation", subject_id=t.id, approver=actor.name, role=actor.role, comment=comment))
        audit(s, actor, "approve_transformation", t.id, {"comment": comment})
        return {"id": t.id, "lifts": list(t.lifts), "approved": True, "approved_by": actor.name}


def _transformation_approved(s: Session, tid: str) -> bool:
    return bool(s.scalar(sa.select(sa.func.count()).select_from(Approval).where(
        Approval.subject_kind == "transformation", Approval.subject_id == tid)))


# ---------------------------------------------------------------- lineage runs


def record_run(store: Store, actor: Actor, *, job_name: str, inputs: Sequence[str], outputs: Sequence[str],
               kind: str = "other", transformation_id: str | None = None, run_id: str | None = None) -> dict[str, Any]:
    """Link existing assets: ``inputs`` -> run -> ``outputs``. Refuses cycles and unknown ids."""
    actor.require("engineer", "recording lineage")
    with store.session() as s:
        run = _record_run(s, actor, job_name=job_name, kind=kind, inputs=inputs, outputs=outputs,
                          transformation_id=transformation_id, run_id=run_id)
        return run_view(s, run)


def lock_lineage(s: Session) -> None:
    """Serialise lineage writes until this transaction ends, so two writes that are each acyclic
    cannot together close a cycle (PostgreSQL advisory lock; SQLite has one writer anyway)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LINEAGE_LOCK})


LINEAGE_LOCK = 0x6173736179  # "assay"


def refuse_cycle(s: Session, run_id: str, in_ids: Iterable[str], out_ids: Iterable[str]) -> None:
    """Raise ``LineageCycle`` naming the cycle if run ``run_id`` with these inputs and outputs
    (added to what it already has: a reused run id links all its inputs to all its outputs)
    would make the lineage cyclic, i.e. if one of its outputs is upstream of one of its inputs."""
    ins, outs = set(in_ids), set(out_ids)
    for asset_id, direction in s.execute(sa.select(RunIO.asset_id, RunIO.direction).where(RunIO.run_id == run_id)):
        (ins if direction == "input" else outs).add(asset_id)
    closing = f"run:{run_id}"
    both = sorted(ins & outs)
    if both:
        raise LineageCycle([both[0], closing, both[0]])
    edges = ancestry_edges(s, sorted(ins)) if ins else []
    hit = sorted(outs & {e[0] for e in edges})
    if not hit:
        return
    builder = GraphBuilder()
    for node in sorted(ins | {e[0] for e in edges} | {e[1] for e in edges}):
        builder.node(node)
    for src, dst, rid in sorted(edges):
        builder.edge(src, dst, run=rid)
    graph = builder.build()
    for i in sorted(ins):
        path = Paths(graph, graph.index[i]).to(graph.index[hit[0]])
        if path:  # [input, run, ..., output] read backwards is output -> ... -> input
            raise LineageCycle([*path[::-1], closing, hit[0]])
    raise LineageCycle([hit[0], closing, hit[0]])  # pragma: no cover - hit is upstream of some input


def _record_run(s: Session, actor: Actor, *, job_name: str, kind: str, inputs: Sequence[str | Asset],
                outputs: Sequence[str | Asset], transformation_id: str | None = None, run_id: str | None = None,
                facets: Mapping[str, Any] | None = None, namespace: str = "assay") -> Run:
    if not outputs:
        raise BadInput("a lineage run needs at least one output")
    lock_lineage(s)
    ins = [ref if isinstance(ref, Asset) else resolve(s, ref) for ref in inputs]
    outs = [ref if isinstance(ref, Asset) else resolve(s, ref) for ref in outputs]
    in_ids, out_ids = [a.id for a in ins], [a.id for a in outs]
    rid = run_id or f"run-{uuid.uuid4()}"
    for a in outs:
        producer = s.scalar(sa.select(RunIO.run_id).where(RunIO.asset_id == a.id, RunIO.direction == "output"))
        if producer and producer != rid:
            raise BadInput(f"{a.id} was already produced by run {producer}; register a new version for a new run")
    refuse_cycle(s, rid, in_ids, out_ids)
    transformation = None
    if transformation_id:
        transformation = s.get(Transformation, transformation_id)
        if transformation is None:
            raise NotFound(f"no transformation {transformation_id!r}")
        if not _transformation_approved(s, transformation.id):
            raise Forbidden(f"transformation {transformation.id} is registered but not approved; it cannot lift restrictions")
    run = s.get(Run, rid)
    if run is None:
        run = Run(id=rid, job_namespace=namespace, job_name=job_name, kind=kind,
                  transformation_id=transformation.id if transformation else None, facets=dict(facets or {}),
                  created_by=actor.name)
        s.add(run)
        s.flush()
    existing = {(x.asset_id, x.direction) for x in s.scalars(sa.select(RunIO).where(RunIO.run_id == rid))}
    for aid in in_ids:
        if (aid, "input") not in existing:
            s.add(RunIO(run_id=rid, asset_id=aid, direction="input"))
    for aid in out_ids:
        if (aid, "output") not in existing:
            s.add(RunIO(run_id=rid, asset_id=aid, direction="output"))
    if transformation is not None and not s.scalar(sa.select(RestrictionLift).where(RestrictionLift.run_id == rid)):
        for restriction in transformation.lifts:
            s.add(RestrictionLift(run_id=rid, transformation_id=transformation.id, restriction=restriction,
                                  recorded_by=actor.name))
    s.flush()
    audit(s, actor, "record_run", rid, {"job": job_name, "kind": kind, "inputs": in_ids, "outputs": out_ids,
                                        "transformation": transformation.id if transformation else None})
    return run


def run_view(s: Session, run: Run) -> dict[str, Any]:
    io = s.scalars(sa.select(RunIO).where(RunIO.run_id == run.id)).all()
    lifts = s.scalars(sa.select(RestrictionLift).where(RestrictionLift.run_id == run.id)).all()
    return {
        "id": run.id, "job": {"namespace": run.job_namespace, "name": run.job_name}, "kind": run.kind,
        "state": run.state, "transformation": run.transformation_id,
        "inputs": sorted(x.asset_id for x in io if x.direction == "input"),
        "outputs": sorted(x.asset_id for x in io if x.direction == "output"),
        "lifts": [{"restriction": x.restriction, "transformation": x.transformation_id, "recorded_by": x.recorded_by,
                   "recorded_at": x.recorded_at.isoformat()} for x in lifts],
        "created_by": run.created_by,
    }


# ---------------------------------------------------------------- the graph from the database


def ancestry_edges(s: Session, asset_ids: Sequence[str]) -> list[tuple[str, str, str]]:
    """(input, output, run) for every lineage edge upstream of ``asset_ids`` (one recursive CTE)."""
    o, i = aliased(RunIO), aliased(RunIO)
    base = (sa.select(i.asset_id.label("src"), o.asset_id.label("dst"), o.run_id.label("run_id"))
            .select_from(o).join(i, sa.and_(i.run_id == o.run_id, i.direction == "input"))
            .where(o.direction == "output", o.asset_id.in_(list(asset_ids))))
    anc = base.cte("ancestry", recursive=True)
    o2, i2 = aliased(RunIO), aliased(RunIO)
    step = (sa.select(i2.asset_id, o2.asset_id, o2.run_id).select_from(o2)
            .join(i2, sa.and_(i2.run_id == o2.run_id, i2.direction == "input"))
            .join(anc, o2.asset_id == anc.c.src).where(o2.direction == "output"))
    anc = anc.union(step)
    return [(r.src, r.dst, r.run_id) for r in s.execute(sa.select(anc.c.src, anc.c.dst, anc.c.run_id))]


def descendant_ids(s: Session, asset_id: str) -> list[str]:
    """Everything downstream of ``asset_id`` (one recursive CTE)."""
    o, i = aliased(RunIO), aliased(RunIO)
    base = (sa.select(o.asset_id.label("dst")).select_from(i)
            .join(o, sa.and_(o.run_id == i.run_id, o.direction == "output"))
            .where(i.direction == "input", i.asset_id == asset_id))
    down = base.cte("descendants", recursive=True)
    o2, i2 = aliased(RunIO), aliased(RunIO)
    step = (sa.select(o2.asset_id).select_from(i2)
            .join(o2, sa.and_(o2.run_id == i2.run_id, o2.direction == "output"))
            .join(down, i2.asset_id == down.c.dst).where(i2.direction == "input"))
    down = down.union(step)
    return sorted(s.scalars(sa.select(down.c.dst)))
