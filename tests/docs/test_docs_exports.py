"""Public entry points (issue #27, item 5): what a part's page documents is importable the way the
page writes it.

- Every ``from assay.X import a, b`` and ``import assay.X`` in a Python block of the docs works.
- Every dotted name in an inline code span (``assay.policy.slate.decide_slate``,
  ``assay.store.labels.NATIVE``) resolves.
- Every public name a part's page writes bare (``TraceLog``, ``drift_report(...)``,
  ``Monitor(bundle, ...)``) that the part defines at the top level of one of its modules is
  exported by the part's ``__init__`` (in ``__all__``), so ``from assay.<part> import Name`` works:
  the page is the part's public surface.
"""

from __future__ import annotations

import ast
import importlib
import re

import pytest
from docpages import PAGES, ROOT, all_blocks, inline_code

SRC = ROOT / "src" / "assay"
PART_PAGES = {p: p.stem for p in PAGES if (SRC / p.stem / "__init__.py").is_file()}


def _import_lines() -> list[tuple[str, str]]:
    out = []
    for b in all_blocks():
        if b.lang != "python":
            continue
        for n, line in enumerate(b.text.splitlines(), b.line + 1):
            s = line.strip()
            if re.match(r"^(from assay[\w.]* import |import assay)", s):
                out.append((f"{b.page.name}:{n}", s.split("#")[0].strip()))
    # a module docstring that shows its own usage is documentation too
    for init in sorted(SRC.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        for s in doc.splitlines():
            s = s.strip()
            if re.match(r"^from assay[\w.]* import [\w, ]+$", s.split("#")[0].strip()):
                out.append((f"{init.relative_to(ROOT)} docstring", s.split("#")[0].strip()))
    return out


IMPORTS = _import_lines()


@pytest.mark.parametrize(("where", "statement"), IMPORTS, ids=[w for w, _ in IMPORTS])
def test_a_documented_import_works(where, statement):
    try:
        exec(statement, {})
    except ImportError as e:
        raise AssertionError(f"{where}: {statement}: {e}") from e


# dotted names in the docs that are not Python names
NOT_CODE = {"assay.guard.kafka": "the stream worker's logger", "assay.request_id": "an OpenTelemetry span attribute"}


def _dotted() -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        for n, code in inline_code(page):
            m = re.fullmatch(r"(assay(?:\.[A-Za-z_]\w*)+)(?:\(.*\))?", code)
            if m and m.group(1) not in NOT_CODE and (SRC / m.group(1).split(".")[1]).with_suffix("").exists() | \
                    (SRC / (m.group(1).split(".")[1] + ".py")).exists():
                out.append((f"{page.name}:{n}", m.group(1)))
    return out


DOTTED = _dotted()


def _resolve(name: str):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


@pytest.mark.parametrize(("where", "name"), DOTTED, ids=[f"{w} {n}" for w, n in DOTTED])
def test_a_documented_dotted_name_resolves(where, name):
    try:
        _resolve(name)
    except (ImportError, AttributeError) as e:
        raise AssertionError(f"{where}: `{name}` does not resolve: {e}") from e


def _top_level_public(part: str) -> dict[str, str]:
    """name -> module for every public class, function and UPPER constant defined at the top of a
    module of the part (private modules and the CLI/bench/demo entry modules excluded)."""
    names: dict[str, str] = {}
    for path in sorted((SRC / part).glob("*.py")):
        if path.stem.startswith("_") or path.stem in ("cli", "bench", "demo"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                names.setdefault(node.name, path.stem)
    return names


def _bare_names(page) -> list[tuple[int, str]]:
    """A class (``TraceLog``, ``Monitor(bundle, ...)``, ``ReferenceProfile.numeric(...)``) or a
    function written as a call (``drift_report(refs, cur)``); a lowercase bare word is prose
    (`normalise`, `train`) more often than an API, and is left out."""
    out = []
    for n, code in inline_code(page):
        m = re.match(r"^([A-Z]\w*)(?:\(|\.\w+|$)", code) or re.match(r"^([a-z_]\w*)\(", code)
        if m:
            out.append((n, m.group(1)))
    return out


CASES = []
for page, part in PART_PAGES.items():
    defined = _top_level_public(part)
    for n, name in _bare_names(page):
        if name in defined:
            CASES.append((f"{page.name}:{n}", part, name, defined[name]))
# one case per (part, name): the first place the page names it
_seen: set[tuple[str, str]] = set()
CASES = [c for c in CASES if (c[1], c[2]) not in _seen and not _seen.add((c[1], c[2]))]


def test_the_pages_name_public_entry_points():
    assert len(CASES) >= 30, CASES


@pytest.mark.parametrize(("where", "part", "name", "module"), CASES, ids=[f"{c[1]}.{c[2]}" for c in CASES])
def test_a_part_exports_what_its_page_documents(where, part, name, module):
    pkg = importlib.import_module(f"assay.{part}")
    assert name in getattr(pkg, "__all__", ()), (
        f"{where}: docs/{part}.md documents `{name}` (defined in assay.{part}.{module}) "
        f"but assay.{part} does not export it: add it to assay/{part}/__init__.py's imports and __all__")
    assert getattr(pkg, name) is getattr(importlib.import_module(f"assay.{part}.{module}"), name)
