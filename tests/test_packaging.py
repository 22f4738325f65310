"""Packaging promises: the guard, policy, trace and store work without the ML extras, and the
CLI loads without importing heavy libraries."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCK_HEAVY = """
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'transformers', 'sentence_transformers', 'lightgbm', 'implicit', 'sklearn', 'llama_cpp'}:
            raise ImportError(f'{name} is blocked: this path must not need the ML extras')
        return None
sys.meta_path.insert(0, _Blocked())
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_HEAVY + code], capture_output=True, text=True, timeout=120)


def test_core_dependencies_do_not_include_pytorch():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("torch") for dep in meta["dependencies"])
    assert any(dep.startswith("torch==") for dep in meta["optional-dependencies"]["ml"])


def test_guard_policy_trace_and_store_import_without_ml_extras():
    proc = run_python("import assay.policy, assay.guard, assay.trace, assay.store, assay.store.labels; print('ok')")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_cli_help_loads_without_ml_extras():
    proc = run_python("from assay.cli.main import main; sys.argv=['assay','--help']; raise SystemExit(main(['--help']))")
    assert proc.returncode == 0, proc.stderr
    for group in ("policy", "bench", "demo"):
        assert group in proc.stdout
