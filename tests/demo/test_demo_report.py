"""The assurance report's builder on a state like the demo leaves (no subprocess: fast)."""

from __future__ import annotations

import json

from assay.cli.demo import DEMO_STEPS, StepResult, write_json_atomic
from assay.records import EvaluationResult
from assay.server.demo import build_report, dashboard_url, write_atomic


def _state() -> dict:
    result = EvaluationResult(
        run_id="run-1", suite="injection-cyberseceval", target="smollm2", metrics={"injection_success_rate": 0.25,
        "injection_success_rate[direct]": 0.5}, intervals={"injection_success_rate": (0.05, 0.6)},
        n={"injection_success_rate": 8}, gate_verdicts={"injection-success-rate": False, "error-rate": True},
        dataset_hashes={}, model_hashes={},
    )  # fmt: skip
    results = [
        StepResult("assay.trace.demo", "trace", 6, "Trace", "done", 1.5),
        StepResult(
            "assay.govern.demo", "govern", 1, "Governance", "skipped", 0.1, "missing lightgbm"
        ),
        StepResult("assay.evaluate.demo", "evaluate", 3, "Evaluate", "done", 9.0),
    ]
    return {
        "demo": {"results": results, "narration": {
            "assay.trace.demo": ["verify: OK - 977 records", "why was 364 shown? <script>alert(1)</script>"]}},
        "evaluate": {"evaluations": [result.to_dict()]},
        "govern": {"ranker": "model:movielens-ranker@1", "gates": [{"id": "ranker-ndcg", "passed": True}],
                   "note": "x" * 500},
    }  # fmt: skip


def test_report_gathers_narration_metrics_and_gates(tmp_path) -> None:
    html = build_report(_state(), home=tmp_path, quick=True)
    assert "verify: OK - 977 records" in html
    assert "injection_success_rate" in html and "[0.05, 0.6]" in html
    assert (
        "injection_success_rate[direct]" not in html
    )  # per-group rows stay in the run's own report
    assert 'class="fail">FAIL' in html and "injection-success-rate" in html
    assert "model:movielens-ranker@1" in html and "ranker-ndcg" in html
    assert "x" * 200 not in html  # long strings from the state are left out
    assert "<script>" not in html and "&lt;script&gt;" in html  # narration is escaped
    assert html.index("Governance") < html.index("Trace")  # story order, not run order
    assert dashboard_url() in html


def test_dashboard_url_follows_the_server_settings(monkeypatch) -> None:
    assert dashboard_url() == "http://127.0.0.1:8750/ui/"
    monkeypatch.setenv("ASSAY_SERVER_PORT", "9000")
    assert dashboard_url() == "http://127.0.0.1:9000/ui/"


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    import pytest

    path = tmp_path / "reports" / "assurance.html"
    write_atomic(path, "old")
    with pytest.raises(TypeError):
        write_atomic(path, b"bytes are not text")  # type: ignore[arg-type]  (fails inside the write)
    assert path.read_text() == "old"
    write_json_atomic(tmp_path / "run.json", {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "run.json", {"a": object()})
    assert json.loads((tmp_path / "run.json").read_text()) == {"a": 1}
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]


def test_every_stage_has_a_step_and_the_report_comes_last() -> None:
    assert DEMO_STEPS[-1] == "assay.server.demo"
    assert DEMO_STEPS.index("assay.cli.demo:replay") > DEMO_STEPS.index("assay.recsys.demo")
    assert DEMO_STEPS.index("assay.trace.demo") > DEMO_STEPS.index("assay.cli.demo:replay")
