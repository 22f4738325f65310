"""The four C extensions are required, not optional: setup.py builds each without
``optional=True`` (a build without a compiler fails loudly instead of falling back), and every
part imports its extension unconditionally. Their Python/numpy counterparts live in tests/ as
oracles (tests/policy/policy_oracles.py, the trace's hashlib/rfc8785 checks)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTENSIONS = ("assay.trace._native", "assay.store._native", "assay.policy._native", "assay.guard._native")


def _declared() -> dict[str, list[str]]:
    """Extension name -> the keyword arguments setup.py passes it."""
    out = {}
    for node in ast.walk(ast.parse((ROOT / "setup.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Extension":
            out[ast.literal_eval(node.args[0])] = [kw.arg for kw in node.keywords]
    return out


def test_setup_builds_every_extension_and_none_is_optional():
    declared = _declared()
    assert sorted(declared) == sorted(EXTENSIONS)
    assert not [name for name, keywords in declared.items() if "optional" in keywords], \
        "an optional extension lets a build without a compiler pass and the part silently lose its C path"


@pytest.mark.parametrize("name", EXTENSIONS)
def test_each_extension_is_built_and_imported(name):
    importlib.import_module(name)


def test_no_part_falls_back_when_its_extension_is_missing():
    """No ``try: import _native / except ImportError`` left in the parts that own one."""
    for name in EXTENSIONS:
        part = ROOT / "src" / Path(*name.split(".")[:-1])
        for path in part.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Try) and any(
                        isinstance(n, ast.ImportFrom) and any(a.name == "_native" for a in n.names)
                        for stmt in node.body for n in ast.walk(stmt)):
                    pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno}: a fallback for a missing {name}")
