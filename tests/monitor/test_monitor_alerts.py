"""Windows -> alert rules from a real policy bundle -> mitigations on the guard's real breakers,
each recorded with the alert that caused it."""

from __future__ import annotations

import math

import pytest

from assay.errors import BadInput
from assay.guard.breakers import BreakerConfig, BreakerRegistry, ScopePolicy, State
from assay.monitor.engine import Monitor, chain
from assay.monitor.mitigations import Mitigator
from assay.monitor.windows import TumblingWindows, naive_stats, stats_from_decisions
from assay.policy import load_bundle
from assay.records import Decision

BUNDLE = """\
bundle: monitor-test
version: "1"
attributes:
  alerts:
    window.n: int
    window.drop_rate: double
    window.surface: string
    window.harm_rate: double
alerts:
  - id: drop-surge
    when: window.n >= 20 && window.drop_rate > 0.3
    severity: page
    reason: the guard is dropping far more than usual
    then: ['trip_breaker("for_you")', 'notify("on-call")']
  - id: harm-surge
    when: window.harm_rate > 0.5
    severity: warn
    then: ['use_rules("search", "search_strict")']
"""


def _bundle(tmp_path, text=BUNDLE):
    p = tmp_path / "alerts.yaml"
    p.write_text(text)
    return load_bundle(p)


def _decisions(n, drop_every, ts0=1000.0, surface="for_you"):
    return [Decision(request_id=f"r{i // 5}", ts=ts0 + i * 0.1, surface=surface, subject_id="u", item_id=f"i{i}",
                     rank_before=i % 5, rank_after=-1 if i % drop_every == 0 else i % 5,
                     action="drop" if i % drop_every == 0 else "allow",
                     rule_ids=("r-mature",) if i % drop_every == 0 else ()) for i in range(n)]


def _scored(scores) -> list[Decision]:
    """Allowed decisions whose ``score_before`` are ``scores`` (a score stream for drift tests)."""
    return [Decision(request_id=f"r{i}", ts=float(i), surface="for_you", subject_id="u", item_id=f"i{i}", rank_before=0,
                     rank_after=0, action="allow", score_before=float(s)) for i, s in enumerate(scores)]


def test_window_stats_match_the_per_record_loop():
    ds = _decisions(200, 4)
    s = stats_from_decisions(ds)
    naive = naive_stats(ds)
    ctx = s.context()["window"]
    assert ctx["n"] == naive["n"] == 200
    assert ctx["requests"] == naive["requests"] == 40
    assert ctx["drop_rate"] == pytest.approx(naive["drop_rate"]) == pytest.approx(0.25)
    assert ctx["rule_rate"] == pytest.approx(naive["rule_rate"])
    assert ctx["surface"] == "for_you"


def test_tumbling_windows_close_on_time_and_count():
    w = TumblingWindows(5.0)
    closed = w.add(_decisions(120, 3, ts0=100.0))  # 12 s of decisions -> windows [100,105), [105,110)
    assert [c.n for c in closed] == [50, 50]
    rest = w.flush()
    assert [r.n for r in rest] == [20]
    by_count = TumblingWindows(60.0, max_n=30).add(_decisions(65, 3))
    assert [c.n for c in by_count] == [30, 30]
    with pytest.raises(BadInput, match="duration"):
        TumblingWindows(0)


def test_alert_fires_trips_breaker_and_records_the_chain(tmp_path):
    bundle = _bundle(tmp_path)
    breakers = BreakerRegistry({"surface": ScopePolicy(BreakerConfig())})
    trace: list = []
    monitor = Monitor(bundle, mitigator=Mitigator(breakers=breakers), recorder=trace.extend)
    calm = stats_from_decisions(_decisions(100, 10))
    assert monitor.evaluate(calm) == []
    surge = stats_from_decisions(_decisions(100, 2, ts0=2000.0))
    firings = monitor.evaluate(surge)
    assert [f.alert_id for f in firings] == ["drop-surge"]
    assert breakers.get("surface:for_you").state is State.FORCED_OPEN
    kinds = [e.kind for e in trace]
    assert kinds == ["alert", "mitigation", "mitigation"]
    alert, trip, notify = trace
    assert alert.payload["window"]["drop_rate"] == pytest.approx(0.5)
    assert trip.payload["caused_by"] == alert.payload["key"] == notify.payload["caused_by"]
    assert trip.payload["ok"] and trip.payload["to"] == "forced_open"
    assert alert.bundle_hash == bundle.hash
    # decisions served after the trip, with the breaker state the guard records
    after = [Decision(request_id="r-after", ts=trip.ts + 1, surface="for_you", subject_id="u", item_id="x",
                      rank_before=0, rank_after=0, action="allow", breaker_state="forced_open")]
    c = chain([*trace, *after], alert.payload["key"])
    assert c["alert"] is alert and c["mitigations"] == [trip, notify] and c["decisions"] == after
    # cooldown: the same incident does not trip again on the next window
    assert monitor.evaluate(stats_from_decisions(_decisions(100, 2, ts0=3000.0))) == []


def test_stricter_rules_mitigation_reconfigures_the_fallback(tmp_path):
    bundle = _bundle(tmp_path)
    breakers = BreakerRegistry({"surface": ScopePolicy(BreakerConfig())})
    trace: list = []
    monitor = Monitor(bundle, mitigator=Mitigator(breakers=breakers), recorder=trace.extend)
    s = stats_from_decisions(_decisions(10, 100, surface="search"))
    s.add_scores([0.9, 0.8, 0.7, 0.1])
    assert [f.alert_id for f in monitor.evaluate(s)] == ["harm-surge"]
    assert breakers.policy("surface:search").fallback.surface == "search_strict"
    assert breakers.get("surface:search").state is State.FORCED_OPEN
    assert trace[-1].payload["rules_of"] == "search_strict"


def test_unwired_mitigation_is_recorded_as_failed_not_skipped(tmp_path):
    bundle = _bundle(tmp_path)
    trace: list = []
    monitor = Monitor(bundle, recorder=trace.extend)  # no breaker registry wired
    monitor.evaluate(stats_from_decisions(_decisions(100, 2)))
    trip = trace[1]
    assert trip.kind == "mitigation" and trip.payload["ok"] is False
    assert "no guard breaker registry" in trip.payload["error"]


def test_unknown_mitigation_is_refused_before_the_monitor_starts(tmp_path):
    bad = BUNDLE.replace('trip_breaker("for_you")', 'reboot("for_you")')
    with pytest.raises(BadInput, match="unknown mitigation reboot"):
        Monitor(_bundle(tmp_path, bad))
    bad_arity = BUNDLE.replace('trip_breaker("for_you")', 'trip_breaker("a", "b")')
    with pytest.raises(BadInput, match="takes 1 argument"):
        Monitor(_bundle(tmp_path, bad_arity))


def test_bench_quick_smoke(typed_bench):
    out = typed_bench("monitor")
    for key in ("drift_ms_per_feature_1m", "alert_eval_ms_per_window"):
        assert math.isfinite(out["figures"][key]) and out["figures"][key] > 0
    assert out["detail"]["agrees_with_scipy"] is True and out["detail"]["scipy_baseline_agrees_with_oracle"] is True
    assert out["baseline"]["drift_ms_per_feature_1m_scipy"] > 0 and set(out["met"]) == {"drift_ms_per_feature_1m"}


def test_watch_loop_runs_scheduled_jobs_and_flushes_on_stop(tmp_path):
    from assay.errors import Unavailable
    from assay.monitor.loop import InboxSource, ScheduledJob, WatchLoop

    bundle = _bundle(tmp_path)
    trace: list = []
    monitor = Monitor(bundle, recorder=trace.extend)
    inbox = InboxSource()
    calls = []

    def job() -> dict:
        calls.append(1)
        if len(calls) == 2:
            raise Unavailable("model server down")
        return {"asr": 0.1}

    loop = WatchLoop(monitor, inbox, TumblingWindows(3600.0), jobs=[ScheduledJob("regress:nightly", 0.0, job)], poll_s=0.001)
    inbox.extend(_decisions(30, 2))  # a surge that stays in an open window until the loop stops
    stats = loop.run(max_steps=2, install_signals=False)
    assert stats.stopped_by == "max_steps" and stats.records == 30 and stats.jobs == 2
    runs = [e for e in trace if e.kind == "scheduled_run"]
    assert [r.payload["ok"] for r in runs] == [True, False] and "model server down" in runs[1].payload["error"]
    assert stats.alerts == 1 and [e.kind for e in trace if e.kind == "alert"] == ["alert"]  # flushed on stop
    with pytest.raises(BadInput, match="poll interval"):
        WatchLoop(monitor, inbox, TumblingWindows(1.0), poll_s=0)


def test_alert_on_score_drift_in_the_window(tmp_path):
    import numpy as np

    from assay.monitor.drift import ReferenceProfile

    text = """\
bundle: drift-alerts
version: "1"
attributes:
  alerts:
    window.psi: map(string, double)
    window.drifted: int
alerts:
  - id: score-drift
    when: '"score" in window.psi && window.psi["score"] > 0.2 && window.drifted >= 1'
    severity: warn
"""
    rng = np.random.default_rng(4)
    monitor = Monitor(_bundle(tmp_path, text), drift_references={"score": ReferenceProfile.numeric("score", rng.beta(2, 5, 5000))})

    def window(a: float) -> object:
        return stats_from_decisions(_scored(rng.beta(a, 5, 2000)))

    same = window(2.0)
    assert monitor.evaluate(same) == [] and same.psi["score"] < 0.05 and same.drifted == 0
    shifted = window(5.0)
    assert [f.alert_id for f in monitor.evaluate(shifted)] == ["score-drift"]
    assert shifted.context()["window"]["psi"]["score"] > 0.2


def test_window_rates_carry_the_project_rate_interval(tmp_path):
    from assay.stats import rate_interval

    text = """\
bundle: evidence-alerts
version: "1"
attributes:
  alerts:
    window.rate_low: map(string, double)
    window.drift_insufficient: int
alerts:
  - id: drop-surge-with-evidence
    when: window.rate_low["drop"] > 0.2
    severity: page
"""
    monitor = Monitor(_bundle(tmp_path, text))
    small = stats_from_decisions(_decisions(3, 1))  # 3 of 3 dropped: a share of 1.0 on no evidence
    ctx = small.context()["window"]
    assert ctx["drop_rate"] == 1.0 and (ctx["rate_low"]["drop"], ctx["rate_high"]["drop"]) == rate_interval(3, 3)
    assert ctx["rule_rate_low"]["r-mature"] == rate_interval(3, 3)[0]
    assert (ctx["rate_low"]["harm"], ctx["rate_high"]["harm"]) == (0.0, 1.0)  # no score stream: no evidence
    assert ctx["drift_insufficient"] == 0
    assert [f.alert_id for f in monitor.evaluate(small)] == ["drop-surge-with-evidence"]  # 3/3: lower bound 0.31
    two = stats_from_decisions(_decisions(2, 2))  # 1 of 2 dropped: lower bound 0.03, no alert
    assert monitor.evaluate(two) == []


def test_a_window_too_small_for_drift_tests_is_counted_as_insufficient(tmp_path):
    from assay.monitor.drift import ReferenceProfile

    monitor = Monitor(_bundle(tmp_path), drift_references={"score": ReferenceProfile.numeric("score", [0.1, 0.2])})
    stats = stats_from_decisions(_scored([0.8, 0.9, 0.95]))
    monitor.add_drift(stats)
    assert stats.drifted == 0 and stats.drift_insufficient == 1
    assert stats.context()["window"]["drift_insufficient"] == 1
