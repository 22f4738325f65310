"""The assurance report: built from run logs (and the registry and the trace), verdicts first,
the failing gate named with its reason, interval plots, the lineage of what was deployed, breaker
and alert timelines, links to each run -- and checked in headless Chromium with screenshots."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from assay.cli.demo import DEMO_STEPS, StepResult, write_json_atomic
from assay.server.demo import build_report, dashboard_url, write_atomic
from assay.stats import rate_aggregate

SECRET = "SAMPLE-TEXT-THAT-MUST-NOT-LEAK"  # stands in for a dataset's prompt and answer text
FEED = Path(__file__).resolve().parents[2] / "src" / "assay" / "policy" / "examples" / "feed.yaml"


def _evaluation(home: Path, run_id: str, suite: str, verdicts: list[tuple[str, str, str]], rate: list[bool]) -> Path:
    """An evaluation's run log written by the evaluation engine's own writer."""
    from assay.evaluate.report import write_runlog

    folder = home / "runs" / run_id
    (folder / "report.html").parent.mkdir(parents=True, exist_ok=True)
    (folder / "report.html").write_text("<html>full report</html>")
    meta = {"run_id": run_id, "suite": suite, "created_at": "2026-12-07T10:00:00Z", "suite_hash": "s" * 64,
            "target": {"kind": "openai", "model": "smollm2"}, "model_hashes": {"smollm2.gguf": "a" * 64},
            "dataset": {"name": "prompts.jsonl", "sha256": "d" * 64, "files": 1}}
    records = [{"id": f"i{i}", "fields": {"prompt": SECRET}, "output": {"text": SECRET}, "scores": {"refused": r}, "error": None}
               for i, r in enumerate(rate)]
    gates = {"bundle": "release", "bundle_version": "3", "bundle_hash": "b" * 64, "passed": all(v == "pass" for _, v, _ in verdicts),
             "verdicts": [{"id": g, "verdict": v, "passed": v == "pass", "reason": why, "evidence": {"refusal_rate": {"n": len(rate)}}}
                          for g, v, why in verdicts]}
    return write_runlog(folder / "runlog.jsonl", meta, records, {"refusal_rate": rate_aggregate(rate)}, gates,
                        artifacts={"report": "report.html"})


def _world(home: Path) -> None:
    from assay.govern.gate import request_deployment
    from assay.govern.registry import Actor, local_actor, register_dataset, register_model
    from assay.records import Event
    from assay.store import open_store
    from assay.trace import TraceLog

    _evaluation(home, "run-fails", "injection-cyberseceval", [
        ("injection-success-rate", "fail", "injection_success_rate 0.31 [0.22, 0.42] > 0.10"),
        ("error-rate", "pass", "error_rate 0 <= 0.05")], [True] * 31 + [False] * 69)
    _evaluation(home, "run-passes", "refusal-do-not-answer", [("refusal-rate", "pass", "refusal_rate 0.97 >= 0.9")],
                [True] * 97 + [False] * 3)
    _evaluation(home, "run-unsure", "bias-bbq", [("bbq-bias", "inconclusive", "needs n >= 30, has 12")], [True] * 6 + [False] * 6)
    store = open_store()
    admin = local_actor()
    data = home / "ratings.csv"
    data.write_text("user,item,rating\n1,10,4.0\n")
    weights = home / "ranker.txt"
    weights.write_text("tree\n")
    ds = register_dataset(store, admin, name="ratings", uri=str(data), purposes=["recommendation"])
    model = register_model(store, admin, name="ranker", weights=[weights], trained_on=[ds["id"]], framework="lightgbm")
    request_deployment(store, Actor(name="eng", role="engineer", source="test"), model=model["id"], surface="for_you",
                       purpose="recommendation", bundle=FEED)
    log = TraceLog.open()
    now = time.time()
    log.append([
        Event(kind="breaker_transition", ts=now - 60, subject="for_you/source:ugc", payload={"from": "closed", "to": "open", "reason": "failure rate 60%"}),
        Event(kind="alert", ts=now - 30, subject="harm-rate-high", payload={"alert": "harm-rate-high", "severity": "page", "key": "k1"}),
        Event(kind="breaker_transition", ts=now, subject="for_you/source:ugc", payload={"from": "open", "to": "closed", "reason": "recovered"}),
    ])
    log.close()


def _report(home: Path) -> str:
    from assay.store import open_store

    state = {"demo": {"results": [StepResult("assay.trace.demo", "trace", 6, "Trace", "done", 1.5),
                                  StepResult("assay.govern.demo", "govern", 1, "Governance", "skipped", 0.1, "missing lightgbm")]}}
    return build_report(home, state=state, store=open_store())


def test_report_puts_verdicts_first_and_names_the_failing_gate(assay_home) -> None:
    _world(assay_home)
    html = _report(assay_home)
    assert html.index('id="headline"') < html.index("<h2>Gate verdicts") < html.index("<h2>Runs") < html.index("Metrics with their 95%")
    headline = html[html.index('id="headline"'):html.index("</h2>", html.index('id="headline"'))]
    assert "NOT CLEARED: 1 gate failed" in headline
    blocking = html[html.index('id="blocking"'):html.index("</ul>", html.index('id="blocking"'))]
    assert "injection-success-rate" in blocking and "0.31 [0.22, 0.42] &gt; 0.10" in blocking and "bbq-bias" in blocking
    assert "refusal-rate" not in blocking  # passes are not what blocks
    gates = html[html.index('id="gates"'):]
    assert gates.index("injection-success-rate") < gates.index("bbq-bias") < gates.index("refusal-rate")  # fail, inconclusive, pass
    assert html.count('<svg class="intervals"') == 3 and 'id="lineage-graph"' in html and '<svg class="timeline"' in html
    assert "deployment:" in html and "for_you/source:ugc" in html and "harm-rate-high" in html
    assert 'href="../runs/run-fails/report.html"' in html  # links to each run, relative to reports/
    plot = html[html.index('<svg class="intervals" width="950" height="48" role="img" aria-label="metrics of run-fails"'):]
    plot = plot[:plot.index("</svg>")]
    assert 'fill="#cf222e"' in plot and "gate injection-success-rate: FAIL" in plot  # the metric the failing gate weighs
    assert SECRET not in html  # samples are never read
    assert "<script" not in html and "http://" not in html.replace(dashboard_url(), "")  # nothing fetched
    steps = html[html.index('id="steps"'):]
    assert steps.index(">govern<") < steps.index(">trace<") and "missing lightgbm" in steps  # story order


def test_an_unreadable_run_log_is_shown_and_blocks_clearance(assay_home) -> None:
    _evaluation(assay_home, "ok", "s", [("g", "pass", "fine")], [True] * 40)
    bad = _evaluation(assay_home, "bad", "s", [("g", "pass", "fine")], [True] * 40)
    bad.write_bytes(bad.read_bytes()[:-20])
    html = build_report(assay_home)
    assert "NOT CLEARED: 1 run log unreadable" in html and "bad/runlog.jsonl" in html and "truncated" in html
    (assay_home / "runs" / "bad" / "runlog.jsonl").unlink()
    assert "CLEARED: all 1 gates passed" in build_report(assay_home)


def test_no_run_logs_says_so(assay_home) -> None:
    assert "NO RUN LOGS: nothing to report" in build_report(assay_home)


def test_report_in_headless_chromium_shows_what_failed_and_why_first(assay_home, tmp_path, browser) -> None:
    _world(assay_home)
    path = write_atomic(assay_home / "reports" / "assurance.html", _report(assay_home))
    shots = Path(os.environ.get("ASSAY_SCREENSHOTS", tmp_path))
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.screenshot(path=str(shots / "assurance-first-screen.png"))
    page.screenshot(path=str(shots / "assurance-full.png"), full_page=True)
    # the first screen (no scrolling) holds the verdict and the failing gate with its reason
    headline = page.locator("#headline")
    assert headline.is_visible() and headline.inner_text().startswith("NOT CLEARED: 1 gate failed")
    assert headline.bounding_box()["y"] < 250
    first = page.locator("#blocking li").first
    assert "FAIL" in first.inner_text() and "injection-success-rate" in first.inner_text()
    assert "0.31 [0.22, 0.42] > 0.10" in first.inner_text()
    assert first.bounding_box()["y"] + first.bounding_box()["height"] < 800
    assert page.locator("#verdict").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(255, 235, 233)"
    # the gates table lists the failure first; the plots, lineage and timeline are drawn
    assert page.locator("#gates tr.gate").first.get_attribute("class") == "gate fail"
    assert page.locator("svg.intervals").count() == 3 and page.locator("svg.intervals circle").count() == 3
    assert page.locator('svg.intervals circle[fill="#cf222e"]').count() == 1  # red: weighed by the failing gate
    assert page.locator("#lineage-graph rect").count() >= 3
    assert page.locator("svg.timeline circle").count() == 3
    page.click("#blocking li a")  # the link goes to the run's own report
    assert page.url.endswith("/runs/run-fails/report.html") and "full report" in page.inner_text("body")
    assert all(u.startswith("file://") for u in requests), requests  # nothing fetched from anywhere
    assert (shots / "assurance-first-screen.png").stat().st_size > 10_000


def test_dashboard_url_follows_the_server_settings(monkeypatch) -> None:
    assert dashboard_url() == "http://127.0.0.1:8750/ui/"
    monkeypatch.setenv("ASSAY_SERVER_PORT", "9000")
    assert dashboard_url() == "http://127.0.0.1:9000/ui/"


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
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


def test_rates_and_other_scales_are_plotted_apart() -> None:
    from assay.server.evidence import interval_plots

    rows = [{"name": "ndcg@10", "value": 0.21, "low": 0.18, "high": 0.24, "n": 610},
            {"name": "aplt", "value": 26.8, "low": 25.3, "high": 28.2, "n": 610},
            {"name": "kappa", "value": 0.4, "low": float("nan"), "high": float("nan"), "n": 3}]
    svg = interval_plots(rows, label="m")
    first, second = svg.split("</svg>")[:2]
    assert "ndcg@10" in first and "kappa" in first and "aplt" not in first and ">1<" in first  # the 0..1 axis
    assert "aplt" in second and ">25.3<" in second and ">28.2<" in second  # its own axis
    assert "no interval, n=3" in first  # an unavailable interval is said, not drawn
