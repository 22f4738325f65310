"""Sampling into the real trace, the transparency report, the CLI over a saved model, and the
benchmark smoke run."""

from __future__ import annotations

import json
import math
import time

import pytest

from assay.errors import BadInput
from assay.explain.ranking import explain_request
from assay.explain.sampling import ExplanationSampler, attach, sample_into_trace
from assay.records import Decision


def decisions_for(att, request_id, user="7"):
    return [
        Decision(request_id, time.time(), "for_you", user, str(int(i)), r, r, "allow")
        for r, i in enumerate(att.item_ids[:5])
    ]


def test_sampling_rate_is_per_request_and_reproducible(trained, monkeypatch):
    rec, _split, _ = trained
    att, _ = explain_request(rec, int(rec.state.user_ids[0]))
    assert all(
        d.attribution is None
        for d in attach(decisions_for(att, "r1"), att, ExplanationSampler(0.0))
    )
    assert all(
        d.attribution for d in attach(decisions_for(att, "r1"), att, ExplanationSampler(1.0))
    )
    sampler = ExplanationSampler(0.25)
    picked = [sampler.sampled(f"req-{i}") for i in range(4000)]
    assert 0.2 < sum(picked) / 4000 < 0.3
    assert picked == [ExplanationSampler(0.25).sampled(f"req-{i}") for i in range(4000)]
    explained = attach(decisions_for(att, "req-1"), att, sampler)
    assert len({d.attribution is not None for d in explained}) == 1  # all or none of a request
    with pytest.raises(BadInput, match="in \\[0, 1\\]"):
        ExplanationSampler(1.5)
    monkeypatch.setenv("ASSAY_EXPLAIN_SAMPLE_RATE", "lots")
    with pytest.raises(BadInput, match="ASSAY_EXPLAIN_SAMPLE_RATE"):
        ExplanationSampler()


def test_attributions_reach_trace_why(trained):
    from assay.trace import TraceLog

    rec, _split, _ = trained
    att, _ = explain_request(rec, int(rec.state.user_ids[0]))
    decisions = decisions_for(att, "req-trace", user="user-42")
    log = TraceLog.open()
    try:
        assert sample_into_trace(log, decisions, att, ExplanationSampler(1.0)) == len(decisions)
        why = log.why(decisions[0].item_id, "user-42")
    finally:
        log.close()
    assert why is not None
    assert why["attribution"] == pytest.approx(att.as_dict(int(decisions[0].item_id)))


def test_transparency_report(trained, tmp_path):
    from assay.explain.transparency import transparency, write_transparency

    rec, _split, _ = trained
    rep = transparency(rec, "for_you", k=10, n_users=30)
    for group in ("all", "active", "light"):
        assert sum(rep.importance[group].values()) == pytest.approx(1.0)
    assert rep.n_users["active"] + rep.n_users["light"] == rep.n_users["all"] == 30
    assert len(rep.main_parameters(3)) == 3
    out = write_transparency(rep, rec, tmp_path / "t.html")
    html = out.read_text()
    assert "Main parameters and their relative importance" in html
    assert "Differences across user groups" in html and html.count("data:image/png;base64,") == 2
    assert "non-profiled option" in html
    assert json.loads(out.with_suffix(".json").read_text())["surface"] == "for_you"
    with pytest.raises(BadInput):
        transparency(rec, "for_you", k=0)


def test_cli_over_a_saved_model(trained, assay_home, capsys):
    from assay.cli.main import main

    _rec, _split, folder = trained
    served = assay_home / "recsys" / "movielens-ref"
    served.mkdir(parents=True)
    for f in folder.iterdir():
        (served / f.name).write_bytes(f.read_bytes())
    user = str(int(_rec.state.user_ids[1]))
    assert main(["explain", "ranking", user, "--k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["items"]) == 3 and out["items"][0]["signals"]
    a, b = out["items"][0]["item_id"], out["items"][2]["item_id"]
    assert main(["explain", "pair", user, str(a), str(b), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["a_above_b"] is True
    assert main(["explain", "pair", user, str(a), "99999999"]) == 2
    assert main(["explain", "transparency", "--users", "10"]) == 0
    assert (assay_home / "reports" / "transparency-for_you.html").is_file()


def test_bench_quick_smoke(typed_bench):
    result = typed_bench("explain")
    for key in ("explain_ms_1000", "train_s"):
        assert math.isfinite(result["figures"][key]) and result["figures"][key] > 0
    assert math.isfinite(result["baseline"]["score_ms_1000"])
    assert result["detail"]["checks"]["max_abs_diff_vs_lightgbm"] < 1e-9
