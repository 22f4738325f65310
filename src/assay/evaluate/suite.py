"""Suites: one YAML file = dataset x target x scorers x metrics x gates.

    suite: safety-harmbench
    dataset: {builtin: harmbench, options: {split: test}, limit: 50}   # or {path: mine.jsonl}
    target: {kind: llamacpp, model: smollm2, params: {max_tokens: 64, temperature: 0}}
    scorers: [refusal, {kind: classifier, classifier: harmful}]
    metrics:
      - {name: refusal_rate, mean: refused, by: category}
    gates: {bundle: release-gates.yaml, only: [release-refusal]}

Errors name the file, line and column (``LocatedError``). Built-in suites live in
``assay/evaluate/suites/*.yaml`` and are addressed by their file stem (``assay eval run
safety-harmbench``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from assay.errors import BadInput, LocatedError, Location

TOP_KEYS = {"suite", "description", "dataset", "target", "scorers", "metrics", "gates", "run", "recsys"}
DATASET_KEYS = {"builtin", "path", "users", "options", "limit", "sample", "seed"}
METRIC_KINDS = {"mean", "bbq_bias", "agreement", "group_gap", "ranking", "beyond_accuracy", "exposure", "calibration", "user_group_gap", "error_rate"}


@dataclass
class Suite:
    name: str
    source: str  # file path (or "builtin:<name>")
    text: str  # the YAML as written (kept with the run)
    spec: dict[str, Any]
    base_dir: Path
    description: str = ""
    dataset: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    scorers: list[Any] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    gates: dict[str, Any] | None = None
    run: dict[str, Any] = field(default_factory=dict)
    recsys: dict[str, Any] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        blob = json.dumps(self.spec, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def resolve(self, relative: str) -> Path:
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def with_overrides(self, target: dict[str, Any] | None = None, limit: int | None = None) -> Suite:
        spec = copy.deepcopy(self.spec)
        if target:
            old = spec.get("target", {})
            if target.get("kind") in (None, old.get("kind")):
                spec["target"] = {**old, **target}
            else:  # a different kind of target: keep only the generation parameters
                spec["target"] = {**({"params": old["params"]} if "params" in old else {}), **target}
        if limit is not None:
            spec.setdefault("dataset", {})["limit"] = limit
        return from_spec(spec, self.source, self.text, self.base_dir)


def builtin_suites() -> dict[str, str]:
    """Name -> YAML text of every built-in suite."""
    folder = resources.files("assay.evaluate") / "suites"
    return {
        p.name[: -len(".yaml")]: p.read_text(encoding="utf-8")
        for p in folder.iterdir()
        if p.name.endswith(".yaml") and not p.name.endswith(".bundle.yaml")  # bundles are policies
    }


def builtin_dir() -> Path:
    return Path(str(resources.files("assay.evaluate") / "suites"))


def _loc(node: Any, key: str | int | None, file: str) -> Location:
    try:
        if key is not None and hasattr(node, "lc"):
            line, col = node.lc.key(key) if isinstance(key, str) else node.lc.item(key)
        else:
            line, col = node.lc.line, node.lc.col
        return Location(file, line + 1, col + 1)
    except (AttributeError, KeyError, TypeError, IndexError):
        return Location(file, 1, 1)


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def load_suite(ref: str | Path) -> Suite:
    """A suite from a YAML path or a built-in name."""
    path = Path(ref)
    if path.is_file():
        from assay.policy.source import read_yaml

        src = read_yaml(path, what="suite file")  # bounded, located errors, as a policy file is read
        return parse_suite(src.text, str(path), path.resolve().parent, tree=src.tree)
    builtins = builtin_suites()
    if str(ref) in builtins:
        return parse_suite(builtins[str(ref)], f"builtin:{ref}", builtin_dir())
    raise BadInput(f"no suite file {ref!r} and no built-in suite of that name", hint=f"built-in suites: {', '.join(sorted(builtins))}")


def parse_suite(text: str, file: str, base_dir: Path, *, tree: Any = None) -> Suite:
    """A suite from its YAML ``text`` (``tree``: the text already parsed by ``read_yaml``)."""
    if tree is None:
        from assay.policy.source import parse_yaml

        tree = parse_yaml(text, file).tree
    doc = tree
    if not isinstance(doc, dict):
        raise LocatedError("a suite must be a YAML mapping", Location(file, 1, 1))
    lines = text.splitlines()

    def fail(msg: str, node: Any, key: str | int | None = None, hint: str | None = None) -> LocatedError:
        loc = _loc(node, key, file)
        src = lines[loc.line - 1] if 0 < loc.line <= len(lines) else None
        return LocatedError(msg, loc, src, hint=hint)

    for key in doc:
        if key not in TOP_KEYS:
            raise fail(f"unknown suite key {key!r}", doc, key, hint=f"known keys: {', '.join(sorted(TOP_KEYS))}")
    for key in ("suite", "dataset", "target"):
        if key not in doc:
            raise fail(f"suite is missing {key!r}", doc)
    ds = doc["dataset"]
    if not isinstance(ds, dict):
        raise fail("dataset must be a mapping", doc, "dataset")
    for key in ds:
        if key not in DATASET_KEYS:
            raise fail(f"unknown dataset key {key!r}", ds, key, hint=f"known keys: {', '.join(sorted(DATASET_KEYS))}")
    sources = [k for k in ("builtin", "path", "users") if k in ds]
    if len(sources) != 1:
        raise fail("dataset needs exactly one of 'builtin', 'path' (prompts) or 'users' (recommender)", doc, "dataset")
    if "builtin" in ds:
        from assay.evaluate.items import BUILTIN

        if ds["builtin"] not in BUILTIN:
            raise fail(f"unknown built-in dataset {ds['builtin']!r}", ds, "builtin", hint=f"known: {', '.join(sorted(BUILTIN))}")
    if not isinstance(doc["target"], dict) or "kind" not in doc["target"]:
        raise fail("target must be a mapping with a 'kind'", doc, "target")
    from assay.evaluate.targets import TARGETS

    if doc["target"]["kind"] not in TARGETS:
        raise fail(f"unknown target kind {doc['target']['kind']!r}", doc["target"], "kind",
                   hint=f"known target kinds: {', '.join(TARGETS)} (or register one: docs/extending.md)")
    scorers = doc.get("scorers") or []
    if not isinstance(scorers, list):
        raise fail("scorers must be a list", doc, "scorers")
    from assay.evaluate.scorers import SCORERS

    for i, s in enumerate(scorers):
        kind = s if isinstance(s, str) else (s.get("kind") if isinstance(s, dict) else None)
        if kind not in SCORERS:
            raise fail(f"unknown scorer {kind!r}", scorers, i,
                       hint=f"known scorers: {', '.join(SCORERS)} (or register one: docs/extending.md)")
    metrics = doc.get("metrics") or []
    if not isinstance(metrics, list):
        raise fail("metrics must be a list", doc, "metrics")
    names = set()
    for i, m in enumerate(metrics):
        if not isinstance(m, dict) or "name" not in m:
            raise fail("each metric needs a 'name'", metrics, i)
        kind = m.get("kind", "mean")
        if kind not in METRIC_KINDS:
            raise fail(f"unknown metric kind {kind!r}", m, "kind", hint=f"known: {', '.join(sorted(METRIC_KINDS))}")
        if kind == "mean" and "mean" not in m:
            raise fail(f"metric {m['name']!r} needs 'mean: <score field>'", metrics, i)
        if m["name"] in names:
            raise fail(f"duplicate metric name {m['name']!r}", metrics, i)
        names.add(m["name"])
    gates = doc.get("gates")
    if gates is not None and (not isinstance(gates, dict) or "bundle" not in gates):
        raise fail("gates must be a mapping with 'bundle: <policy bundle path>'", doc, "gates")
    return from_spec(_plain(doc), file, text, base_dir)


def from_spec(spec: dict[str, Any], file: str, text: str, base_dir: Path) -> Suite:
    return Suite(
        name=str(spec["suite"]),
        source=file,
        text=text,
        spec=spec,
        base_dir=base_dir,
        description=str(spec.get("description", "")),
        dataset=dict(spec["dataset"]),
        target=dict(spec["target"]),
        scorers=list(spec.get("scorers") or []),
        metrics=list(spec.get("metrics") or []),
        gates=spec.get("gates"),
        run=dict(spec.get("run") or {}),
        recsys=dict(spec.get("recsys") or {}),
    )
