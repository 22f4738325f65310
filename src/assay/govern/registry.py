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
import posixpath
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
from assay.store.values import text_problem

from . import schemas
from .propagation import GraphBuilder, LineageCycle, Paths
from .schemas import NAME_PATTERN, TERM_PATTERN

ROLES = ("viewer", "engineer", "approver", "admin")
KINDS = ("dataset", "model", "evaluation", "deployment")
NAME_RE = re.compile(NAME_PATTERN)
TERM_RE = re.compile(TERM_PATTERN)
STRUCTURED_RESTRICTIONS = ("contains_minors", "consent_scope", "region", "retention_days")
MAX_MANIFEST_FILES = 100_000


class Forbidden(AssayError):
    """The actor's role or identity may not do this (HTTP 403)."""


class NotFound(BadInput):
    """An id that names nothing in the registry (HTTP 404)."""


class Conflict(BadInput):
    """The request conflicts with what the registry holds, e.g. a second approval by the same
    person (HTTP 409)."""


@dataclass(frozen=True)
class Actor:
    """Who is acting, with which role, from where (for access checks and the audit log).

    An actor from an API token carries the token's id, its principal's ``kind`` (a ``service``
    may not approve) and ``delegated_by``: whoever minted the token over the API for someone
    else, and so could be the one using it. ``remote`` actors came over the network; they see
    files only under the data roots (``data_roots``)."""

    name: str
    role: str
    source: str = "cli"
    kind: str = "person"
    token_id: str | None = None
    delegated_by: str | None = None
    remote: bool = False

    @property
    def accountable(self) -> str:
        """The principal answerable for what this actor does (the minter of a delegated token)."""
        return self.delegated_by or self.name

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


def file_manifest(root: Path, files: Sequence[str | Path] | None = None, *,
                  actor: Actor | None = None) -> list[dict[str, Any]]:
    """``[{path, sha256, size}]`` for a file, every file under a folder, or the named files.

    With ``actor``, every file must lie under the data roots that actor may read (``confine``),
    checked before anything is opened; a folder with no files is refused."""
    root = Path(root)
    if files:
        paths = [root / f for f in files]
    elif root.is_file():
        paths = [root]
        root = root.parent
    elif root.is_dir():
        paths = sorted(p for p in root.rglob("*") if p.is_file())
        if not paths:
            raise BadInput(f"{root}: the folder has no files to register")
        if len(paths) > MAX_MANIFEST_FILES:
            raise BadInput(f"{root}: more than {MAX_MANIFEST_FILES} files; register a smaller folder")
    else:
        raise BadInput(f"{root}: no such file or folder")
    if actor is not None:
        for p in paths:
            confine(p, actor, "file")
    out = []
    for p in paths:
        if not p.is_file():
            raise BadInput(f"{p}: no such file")
        out.append({"path": p.relative_to(root).as_posix(), "sha256": sha256_file(p), "size": p.stat().st_size})
    return out


def weights_path(base: Path, rel: str, actor: Actor | None) -> tuple[Path | None, str | None]:
    """Where a registered file is checked, or why it is not read: a manifest path must stay inside
    its folder, and a confined actor's check reads only under the data roots."""
    if not rel or rel.startswith("/") or "\\" in rel or posixpath.normpath(rel) != rel or ".." in rel.split("/"):
        return None, f"{rel[:200]!r}: not a path inside the model folder {base}; not read"
    path = base / rel
    if actor is not None:
        try:
            confine(path, actor, "weights file")  # where it resolves; the path itself is what is checked
        except OutsideDataRoots as e:
            return None, f"{e.message}; not read"
    return path, None


class OutsideDataRoots(Forbidden):
    """A path that resolves outside the data roots (HTTP 403, exit 2)."""

    exit_code = 2


def confined(actor: Actor) -> bool:
    """Whether ``actor`` may see files only under the data roots: anyone who came over the
    network, and everyone once ``ASSAY_DATA_ROOTS`` is set."""
    from assay.config import settings

    return actor.remote or settings().data_roots_configured


def confine(path: str | Path, actor: Actor, what: str = "path") -> Path:
    """``path`` with symlinks resolved, refused unless it lies under a data root (for a confined
    actor). The error names the roots, and is the same whether or not the path exists."""
    from assay.config import settings

    text = str(path)
    if "\x00" in text:
        raise BadInput(f"{what} contains a NUL byte")
    try:
        resolved = Path(text).expanduser().resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise BadInput(f"{what} {text[:200]!r} cannot be resolved: {e}") from None
    roots = settings().data_roots if confined(actor) else None
    if roots is None or any(resolved.is_relative_to(root) for root in roots):
        try:  # checked inside the roots only, so a refusal outside them says nothing of what exists
            resolved.exists()  # a name the file system refuses (a part over 255 bytes) raises here, not later
        except OSError as e:
            raise BadInput(f"{what} {text[:200]!r} is not a usable path: {e.strerror}") from None
        return resolved
    raise OutsideDataRoots(f"{what} {text[:200]!r} resolves outside the data roots ({', '.join(map(str, roots))})",
                           hint="put the files under a data root; the server's operator sets them with ASSAY_DATA_ROOTS")


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
    """An asset by exact id (``model:ranker@2``), the latest version of ``kind:name`` / ``name``,
    or one version of a name: ``name@2`` (its version number) or ``name@<hex>`` (a prefix of at
    least 8 hex digits of its content hash or of one of its files' sha256).

    ``name@<hex>`` is the identity running code records: a recommender's decisions carry
    ``movielens-ref@f86af32470bb`` (the sha256 of the weights file it served), so the trace's
    ``why`` reaches the registered version and its training data (docs/govern.md)."""
    if not isinstance(ref, str) or not ref:
        raise NotFound("an asset id is required")
    if len(ref) > 512 or text_problem(ref, single_line=True):
        raise NotFound(f"no asset {ref[:80]!r}: ids are at most 512 printable characters")
    asset = session.get(Asset, ref)
    if asset is not None:
        if kind and asset.kind != kind:
            raise NotFound(f"no {kind} {ref!r}: it is a {asset.kind}")
        return asset
    want_kind, name = kind, ref
    if ":" in ref and ref.split(":", 1)[0] in KINDS:
        want_kind, name = ref.split(":", 1)
        if kind and want_kind != kind:
            raise NotFound(f"no {kind} {ref!r}: it names a {want_kind}")
    namespace = "assay"
    query = sa.select(Asset).where(Asset.name == name, Asset.namespace == namespace)
    if want_kind:
        query = query.where(Asset.kind == want_kind)
    latest = session.scalars(query.order_by(Asset.version.desc()).limit(1)).first()
    if latest is None and "@" in name:
        return _resolve_selector(session, ref, want_kind, *name.rsplit("@", 1))
    if latest is None:
        raise NotFound(f"no {want_kind or 'asset'} {ref!r} in the registry",
                       hint="list them with `assay lineage show --all` or register it first")
    return latest


HASH_PREFIX_RE = re.compile(r"^[0-9a-f]{8,64}$")


def _resolve_selector(session: Session, ref: str, kind: str | None, name: str, selector: str) -> Asset:
    """``name@<version>`` or ``name@<hash prefix>``; a prefix that matches two versions is refused
    (naming them) rather than guessed, because the answer decides which training data is shown."""
    versions = sa.select(Asset).where(Asset.name == name, Asset.namespace == "assay")
    if kind:
        versions = versions.where(Asset.kind == kind)
    what = kind or "asset"
    known = session.scalars(versions.order_by(Asset.version)).all()
    if not known:
        raise NotFound(f"no {what} {ref!r} in the registry: nothing is registered under the name {name!r}",
                       hint="list them with `assay lineage show --all` or register it first")
    if selector.isdigit():
        match = [a for a in known if a.version == int(selector)]
        if match:
            return match[0]
    if HASH_PREFIX_RE.match(selector.lower()):
        prefix = selector.lower()
        by_file = set(session.scalars(sa.select(AssetFile.asset_id).where(
            AssetFile.asset_id.in_([a.id for a in known]), AssetFile.sha256.startswith(prefix, autoescape=True))))
        match = [a for a in known if (a.content_hash or "").startswith(prefix) or a.id in by_file]
        if len(match) == 1:
            return match[0]
        if match:
            raise Conflict(f"{ref!r} is ambiguous: the hash prefix {prefix} matches {', '.join(a.id for a in match)}",
                           hint="name the version itself (e.g. " + match[-1].id + ") or give a longer prefix")
    registered = ", ".join(f"{a.id} ({(a.content_hash or 'no content hash')[:12]})" for a in known[-5:])
    raise NotFound(f"no version of {what} {name!r} matches {selector!r}: neither a version number nor a prefix "
                   f"(8+ hex digits) of a registered content hash or weights file; registered: {registered}",
                   hint="register these weights as a new version (`assay register model`) so decisions made with "
                        "them resolve")


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
    """Register (a new version of) a dataset. Local ``uri`` paths are hashed file by file (under
    the data roots, for a confined actor: ``confine``).

    With ``withdrawal`` (the reason, e.g. "users withdrew consent for ads on 2026-03-01") the new
    version is a consent withdrawal: its terms also bind every earlier version of the dataset, and
    so every model trained on one (docs/govern.md, "Versions and consent withdrawal")."""
    actor.require("engineer", "registering a dataset")
    spec = schemas.parse(schemas.DatasetSpec, {"name": name, "uri": str(uri), "purposes": list(purposes or ()),
                                               "restrictions": list(restrictions or ()), "owner": owner,
                                               "licence": licence, "schema": dict(schema or {}),
                                               "files": None if files is None else [dict(f) for f in files],
                                               "withdrawal": withdrawal})
    if spec.withdrawal is not None and not spec.withdrawal.strip():
        raise BadInput("a withdrawal needs its reason: 1 to 2000 characters saying whose consent changed and when")
    if spec.files is None:
        path = confine(spec.uri, actor, "dataset uri")
        if not path.exists():
            raise BadInput(f"dataset uri {spec.uri!r} is not a local file or folder; pass the file manifest explicitly")
        manifest = file_manifest(path, actor=actor)
        uri = str(path)
    else:
        manifest = [f.model_dump() for f in spec.files]
        uri = spec.uri
    with store.session() as s:
        record: dict[str, Any] = {"schema": spec.data_schema}
        if spec.withdrawal is not None:
            earlier = s.scalars(sa.select(Asset.id).where(Asset.kind == "dataset", Asset.namespace == namespace,
                                                          Asset.name == spec.name).order_by(Asset.version)).all()
            if not earlier:
                raise BadInput(f"dataset {spec.name!r} has no earlier version whose consent could be withdrawn",
                               hint="register it normally; a withdrawal narrows versions registered before it")
            record["withdrawal"] = {"reason": spec.withdrawal.strip(), "binds": list(earlier)}
        asset = _new_asset(s, actor, kind="dataset", name=spec.name, namespace=namespace, purposes=spec.purposes,
                           restrictions=spec.restrictions, uri=uri, owner=spec.owner, licence=spec.licence,
                           files=manifest, spec=record)
        if spec.withdrawal is not None:
            audit(s, actor, "withdraw_consent", asset.id, {"reason": spec.withdrawal.strip(),
                                                          "binds": record["withdrawal"]["binds"],
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
    now is recorded, so the gate can tell when a link is re-pointed (``weights_layout``). For a
    confined actor every path, and every file it leads to, must resolve under the data roots."""
    actor.require("engineer", "registering a model")
    spec = schemas.parse(schemas.ModelSpec, {
        "name": name, "weights": None if weights is None else [str(w) for w in weights],
        "files": None if files is None else [dict(f) for f in files], "uri": None if uri is None else str(uri),
        "framework": framework, "trained_on": list(trained_on or ()), "training_run": training_run,
        "purposes": list(purposes or ()), "restrictions": list(restrictions or ()), "owner": owner,
        "licence": licence, "transformation": transformation})
    layout: dict[str, Any] | None = None
    if spec.files is None:
        for w in [*(spec.weights or ()), *([spec.uri] if spec.uri else [])]:
            confine(w, actor, "weights")
        given = [Path(os.path.abspath(w)) for w in spec.weights or ()]
        root = Path(os.path.abspath(spec.uri)) if spec.uri else Path(_common_root(given))
        rels, folders = _weights_files(root, given)
        manifest = file_manifest(root, rels, actor=actor)
        layout = weights_layout(root, rels, folders)
        uri = str(root)
    else:
        if confined(actor):
            confine(spec.uri or "", actor, "model uri")
        uri = os.path.abspath(spec.uri) if spec.uri else None
        manifest = [f.model_dump() for f in spec.files]
    with store.session() as s:
        inputs = [resolve(s, ref) for ref in spec.trained_on]
        run_name = spec.training_run or f"train-{spec.name}"
        asset = _new_asset(s, actor, kind="model", name=spec.name, purposes=spec.purposes,
                           restrictions=spec.restrictions, uri=uri, owner=spec.owner, licence=spec.licence,
                           files=manifest, spec={"framework": spec.framework, "training_run": run_name,
                                                 "declares_purposes": bool(spec.purposes),
                                                 **({"weights": layout} if layout else {})})
        if inputs:
            _record_run(s, actor, job_name=run_name, kind="train", inputs=[a.id for a in inputs],
                        outputs=[asset.id], transformation_id=spec.transformation)
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
    data = result.to_dict() if isinstance(result, EvaluationResult) else result
    if not isinstance(data, Mapping):
        raise BadInput(f"an evaluation result must be a JSON object, not {type(data).__name__}")
    checked = schemas.parse(schemas.EvaluationSpec, dict(data))
    result = EvaluationResult(**checked.model_dump())
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
    checked = schemas.parse(schemas.TransformationIn, {"name": name, "lifts": list(lifts or ()), "description": description})
    name, description = checked.name, checked.description
    lifts = normalise_terms(checked.lifts, "restriction")
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
    comment = schemas.parse(schemas.ApprovalIn, {"comment": comment}).comment
    check_approver(actor, "approving a transformation")
    with store.session() as s:
        t = s.get(Transformation, transformation_id) if len(str(transformation_id)) <= 255 else None
        if t is None:
            raise NotFound(f"no transformation {str(transformation_id)[:80]!r}")
        if t.created_by in (actor.name, actor.accountable):
            raise Forbidden(f"{t.created_by} registered {transformation_id} and may not approve it"
                            + ("" if actor.accountable == actor.name else f" (the token was minted by {actor.accountable})"))
        add_approval(s, actor, "transformation", t.id, comment)
        audit(s, actor, "approve_transformation", t.id, {"comment": comment, "accountable": actor.accountable})
        return {"id": t.id, "lifts": list(t.lifts), "approved": True, "approved_by": actor.name}


def check_approver(actor: Actor, action: str) -> None:
    """Approvals need role approver (or admin) and a person: a service principal never approves."""
    actor.require("approver", action)
    if actor.kind != "person":
        raise Forbidden(f"{actor.name} is a {actor.kind}; only people approve")


def add_approval(s: Session, actor: Actor, subject_kind: str, subject_id: str, comment: str) -> None:
    """One approval per subject and accountable principal, held by a database constraint: a
    duplicate (even one racing in at the same instant from another request) is a ``Conflict``."""
    mine = sa.or_(Approval.approver == actor.name, Approval.accountable == actor.accountable)
    if s.scalar(sa.select(Approval.id).where(Approval.subject_id == subject_id, mine).limit(1)) is not None:
        raise _duplicate_approval(actor, subject_id)
    s.add(Approval(subject_kind=subject_kind, subject_id=subject_id, approver=actor.name,
                   accountable=actor.accountable, role=actor.role, comment=comment))
    try:
        s.flush()  # the unique constraint answers here; the caller's transaction then rolls back whole
    except sa.exc.IntegrityError:
        raise _duplicate_approval(actor, subject_id) from None


def _duplicate_approval(actor: Actor, subject_id: str) -> Conflict:
    who = actor.name if actor.accountable == actor.name else f"{actor.accountable} (who minted {actor.name}'s token)"
    return Conflict(f"{who} has already approved {subject_id}; a further approval must come from someone else")


def _transformation_approved(s: Session, tid: str) -> bool:
    return bool(s.scalar(sa.select(sa.func.count()).select_from(Approval).where(
        Approval.subject_kind == "transformation", Approval.subject_id == tid)))


# ---------------------------------------------------------------- lineage runs


def record_run(store: Store, actor: Actor, *, job_name: str, inputs: Sequence[str], outputs: Sequence[str],
               kind: str = "other", transformation_id: str | None = None, run_id: str | None = None) -> dict[str, Any]:
    """Link existing assets: ``inputs`` -> run -> ``outputs``. Refuses cycles and unknown ids."""
    actor.require("engineer", "recording lineage")
    checked = schemas.parse(schemas.RunIn, {"job_name": job_name, "inputs": list(inputs or ()), "outputs": list(outputs or ()),
                            "kind": kind, "transformation": transformation_id})
    with store.session() as s:
        run = _record_run(s, actor, job_name=checked.job_name, kind=checked.kind, inputs=checked.inputs,
                          outputs=checked.outputs, transformation_id=checked.transformation, run_id=run_id)
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
