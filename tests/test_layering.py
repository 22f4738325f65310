"""The dependency rules of docs/architecture.md, checked on the source: every ``import`` of an
``assay`` module, at the top of a file or inside a function (a lazy import is still a
dependency), is an edge from one part to another, and each edge must point down the layers:

    faces (cli, server)  ->  engines  ->  foundations

Foundations import no engine and no face; engines import no face; an engine imports another
engine only where the map names the reason (``ENGINE_EDGES``). A new edge fails here until the
map and this list say why it is right.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

FACES = {"cli", "server", "testing", "__main__"}  # __main__: `python -m assay`, the cli under another name; testing: the extension points' contract checks drive every part, as cli does
ENGINES = {"govern", "guard", "evaluate", "redteam", "monitor", "explain", "mitigate", "recsys"}
FOUNDATIONS = {"policy", "trace", "store", "classify", "judges", "data", "stats", "records", "errors", "config", "asgi",
               "files", "demo_story", "runlog", "plugins", "__init__"}

# Foundation -> engine edges the map allows: each is lazy, inside a registration step only.
FOUNDATION_EDGES = {
    ("assay.classify.governance", "govern"): "the training command registers datasets, head weights and "
                                             "its evaluation, lazily (docs/architecture.md)",
}

# Engine -> engine edges the map allows, each with its reason.
ENGINE_EDGES = {
    ("explain", "recsys"): "an explanation of a ranker needs the ranker's features and trees",
    ("recsys", "evaluate"): "the recommender's offline numbers are evaluate.recsys_metrics, not a second copy",
    ("recsys", "govern"): "the reference recommender registers itself through govern.registry (lazy)",
    ("mitigate", "evaluate"): "re-evaluates the fine-tuned model with run_suite and the engine's intervals",
    ("mitigate", "govern"): "registers the mitigated model with lineage and asks the deployment gate",
    ("evaluate", "govern"): "a suite run registers its evaluation record in the registry (lazy)",
    ("redteam", "evaluate"): "red-team regressions are evaluation suites (run_suite, targets, items)",
    ("redteam", "guard"): "filter evasion is measured against the real guard on perturbed text",
    ("redteam", "recsys"): "shilling and poisoning attack the reference recommender",
    ("guard", "govern"): "`assay guard serve` checks the control plane's API tokens (govern.tokens); the "
                         "guard's app sees only a lookup function",
    ("monitor", "guard"): "a mitigation trips the guard's breakers to their fallback (Fallback type)",
}

# Modules whose job is to exercise several parts at once: the demo steps (run by the
# orchestrator in ``cli``), the benchmarks (run by ``assay bench``; their ``BenchResult`` is
# ``assay.records``'), the guard's traced replay and its differential fuzzer. They import the
# engines they measure or show, never a face.
def _composition(module: str) -> bool:
    leaf = module.rsplit(".", 1)[-1]
    return leaf in {"demo", "bench", "stream_bench", "replay", "fuzz"}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted((SRC / "assay").rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        name = ".".join(rel.parts)
        yield name.removesuffix(".__init__"), path


def _imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # ``from assay import govern`` names the part in the alias
                if target == "assay":
                    yield f"assay.{alias.name}", node.lineno


def _edges() -> list[tuple[str, str, str, int]]:
    """(importing module, imported module, file, line) for every import between two parts."""
    out = []
    for module, path in _modules():
        for target, line in _imports(module, path):
            if target.startswith("assay.") and _part(target) != _part(module) and _part(target) != "__version__":
                out.append((module, target, str(path.relative_to(SRC.parent)), line))
    return out


def test_every_part_has_a_layer():
    parts = {_part(m) for m, _ in _modules()}
    unknown = parts - FACES - ENGINES - FOUNDATIONS
    assert not unknown, f"parts with no layer in tests/test_layering.py (and docs/architecture.md): {sorted(unknown)}"


def test_foundations_import_no_engine_and_no_face():
    bad = [f"{where}:{line}: {module} imports {target}" for module, target, where, line in _edges()
           if _part(module) in FOUNDATIONS and (_part(target) in FACES or (
               _part(target) in ENGINES and (module, _part(target)) not in FOUNDATION_EDGES and not _composition(module)))]
    assert not bad, "a foundation imports an engine or a face:\n" + "\n".join(bad)


def test_engines_import_no_face():
    bad = [f"{where}:{line}: {module} imports {target}" for module, target, where, line in _edges()
           if _part(module) in ENGINES and _part(target) in FACES]
    assert not bad, "an engine imports the command line or the control plane:\n" + "\n".join(bad)


def test_engines_import_other_engines_only_where_the_map_says_why():
    bad = [f"{where}:{line}: {module} imports {target}" for module, target, where, line in _edges()
           if _part(module) in ENGINES and _part(target) in ENGINES
           and (_part(module), _part(target)) not in ENGINE_EDGES and not _composition(module)]
    assert not bad, ("an engine reaches into another engine (move the code that joins them above both, "
                     "into cli, or exchange a record):\n" + "\n".join(bad))


def test_the_control_plane_and_the_command_line_do_not_import_each_other_for_a_story():
    """The demo's story and step contract live in ``assay.demo_story``: neither a part's demo step
    nor the control plane's report imports the ``assay demo`` command."""
    bad = [f"{where}:{line}: {module} imports {target}" for module, target, where, line in _edges()
           if target == "assay.cli.demo" and not module.startswith("assay.cli.")]
    assert not bad, "\n".join(bad)


def test_every_named_edge_is_still_needed():
    """An allowed edge the code no longer has is taken off the list (and the map), so the list
    says what the code does."""
    present = {(_part(m), _part(t)) for m, t, _, _ in _edges()} | {(m, _part(t)) for m, t, _, _ in _edges()}
    stale = [edge for edge in (*ENGINE_EDGES, *FOUNDATION_EDGES) if edge not in present]
    assert not stale, f"named edges the code no longer has: {stale}"


@pytest.mark.parametrize("rule", ["foundation", "engine"])
def test_the_check_sees_a_violation(tmp_path, monkeypatch, rule):
    """The rules fail on a real violation: a foundation module and an engine module that import
    upwards, written into a copy of the tree's layout."""
    root = tmp_path / "src"
    (root / "assay" / "trace").mkdir(parents=True)
    (root / "assay" / "guard").mkdir(parents=True)
    for pkg in ("assay", "assay/trace", "assay/guard"):
        (root / pkg / "__init__.py").write_text("")
    (root / "assay" / "trace" / "bad.py").write_text("def f():\n    from assay.govern import lineage\n")
    (root / "assay" / "guard" / "bad.py").write_text("from assay.server.auth import token_actor\n")
    monkeypatch.setitem(globals(), "SRC", root)
    check = test_foundations_import_no_engine_and_no_face if rule == "foundation" else test_engines_import_no_face
    with pytest.raises(AssertionError, match=r"assay\.trace\.bad imports assay\.govern|assay\.guard\.bad imports assay\.server\.auth"):
        check()
