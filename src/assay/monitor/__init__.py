"""Monitoring: windows over the guard's decision stream, drift tests with effect sizes, the
bundle's ``alerts`` over window statistics, and the mitigations they run. See docs/monitor.md.

    from assay.monitor import Monitor, ReferenceProfile, TumblingWindows, drift_report
    windows = TumblingWindows(60.0, max_n=10_000)
    monitor = Monitor(bundle, drift_references={"score": ReferenceProfile.numeric("score", last_week)})
    for stats in windows.add(decisions):
        monitor.evaluate(stats)                  # alerts fired, mitigations run, all traced

Names are imported lazily so that ``assay.monitor.cli`` (and ``assay --help``) stay cheap.
"""

from __future__ import annotations

from assay import lazy_exports

_EXPORTS = {
    "WINDOW_ATTRIBUTES": "assay.monitor.windows",
    "TumblingWindows": "assay.monitor.windows",
    "WindowStats": "assay.monitor.windows",
    "stats_from_decisions": "assay.monitor.windows",
    "Monitor": "assay.monitor.engine",
    "Firing": "assay.monitor.engine",
    "chain": "assay.monitor.engine",
    "trace_records": "assay.monitor.engine",
    "ReferenceProfile": "assay.monitor.drift",
    "Thresholds": "assay.monitor.drift",
    "drift_report": "assay.monitor.drift",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
