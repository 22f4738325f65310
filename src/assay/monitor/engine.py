"""The monitor: window statistics in, alerts and mitigations out, every step in the trace.

For each closed window the bundle's ``alerts`` section is evaluated (``bundle.check_alerts`` over
``window.*``, see :mod:`assay.monitor.windows`). Each alert that fires becomes an
``Event(kind="alert")``; each of its ``then`` calls runs through the :class:`Mitigator` and becomes
an ``Event(kind="mitigation")`` whose payload names the alert event (``caused_by``). Both go to
the recorder — in production ``assay.trace.TraceLog.append`` — so the trace holds the chain
alert -> action -> the decisions served afterwards (their ``breaker_state`` shows the fallback).

A cooldown keeps one incident from re-running its mitigations on every window: an alert that
fired for a surface does not fire again for it within ``cooldown_s``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from assay.errors import BadInput
from assay.monitor.mitigations import Mitigator, check_call
from assay.monitor.windows import WindowStats
from assay.records import Event

Recorder = Callable[[list[Any]], Any]


@dataclass
class Firing:
    """One alert that fired on one window, and what was done about it."""

    alert_id: str
    severity: str
    window: WindowStats
    event: Event
    mitigations: list[Event] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.event.payload["key"]

    def to_dict(self) -> dict[str, Any]:
        return {"alert": self.alert_id, "severity": self.severity, "key": self.key,
                "window": self.window.to_dict(), "mitigations": [m.payload for m in self.mitigations]}


def alert_key(alert_id: str, surface: str, start: float, fired_at: float) -> str:
    """An id for one firing (what mitigation events point back to)."""
    return hashlib.sha256(f"{alert_id}|{surface}|{start!r}|{fired_at!r}".encode()).hexdigest()[:16]


class Monitor:
    """Evaluates a bundle's alert rules over windows and runs their mitigations."""

    def __init__(self, bundle: Any, *, mitigator: Mitigator | None = None, recorder: Recorder | None = None,
                 cooldown_s: float = 300.0, clock: Callable[[], float] = time.time,
                 drift_references: dict[str, Any] | None = None, drift_correction: str = "bh"):
        alerts = list(getattr(bundle, "alerts", []) or [])
        for a in alerts:
            where = str(getattr(a, "location", f"alert {a.id}"))
            for call in a.then:
                check_call(call.name, tuple(call.args), f"{where}: alert {a.id}")
        self.bundle = bundle
        self.alerts = {a.id: a for a in alerts}
        self.mitigator = mitigator or Mitigator(clock=clock)
        self.recorder = recorder
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.drift_references = dict(drift_references or {})  # stream name ("score", "harm") -> ReferenceProfile
        self.drift_correction = drift_correction
        self.firings: list[Firing] = []
        self._last_fired: dict[tuple[str, str], float] = {}

    def _record(self, records: list[Any]) -> None:
        if self.recorder is not None and records:
            self.recorder(records)

    def add_drift(self, stats: WindowStats) -> None:
        """Drift of the window's streams against the references: ``window.psi``, ``window.ks``,
        ``window.drifted`` and ``window.drift_insufficient`` (streams whose window was too small
        to decide) for the alert rules (streams absent from the window are skipped)."""
        from assay.monitor.drift import drift_report

        refs = {k: v for k, v in self.drift_references.items() if stats.values.get(k) is not None and stats.values[k].size}
        if not refs:
            return
        report = drift_report(refs, {k: stats.values[k] for k in refs}, correction=self.drift_correction)
        for f in report.features:
            stats.psi[f.feature] = f.psi
            if f.ks is not None:
                stats.ks[f.feature] = f.ks
        stats.drifted = len(report.drifted)
        stats.drift_insufficient = len(report.insufficient)

    def fired_alerts(self, stats: WindowStats) -> list[Any]:
        """The bundle's alerts whose condition holds over this window (no side effects)."""
        self.add_drift(stats)
        if not self.alerts:
            return []
        check = getattr(self.bundle, "check_alerts", None)
        if check is None:
            raise BadInput("this policy bundle cannot evaluate alerts (no check_alerts)")
        return list(check(stats.context()))

    def evaluate(self, stats: WindowStats) -> list[Firing]:
        """Evaluate one closed window: record alerts, run and record their mitigations."""
        now = self.clock()
        out: list[Firing] = []
        for alert in self.fired_alerts(stats):
            last = self._last_fired.get((alert.id, stats.surface))
            if last is not None and now - last < self.cooldown_s:
                continue
            self._last_fired[(alert.id, stats.surface)] = now
            key = alert_key(alert.id, stats.surface, stats.start, now)
            event = Event(
                kind="alert", ts=now, subject=alert.id,
                payload={"key": key, "alert": alert.id, "severity": alert.severity, "when": alert.when,
                         "reason": alert.reason, "surface": stats.surface, "window": stats.to_dict(),
                         "requests_sample": list(stats.request_ids),
                         "then": [f"{c.name}({', '.join(repr(x) for x in c.args)})" for c in alert.then]},
                bundle_hash=getattr(self.bundle, "hash", ""),
            )
            self._record([event])
            firing = Firing(alert.id, alert.severity, stats, event)
            for call in alert.then:
                m = self.mitigator.apply(call.name, tuple(call.args), alert_id=alert.id, alert_event_key=key,
                                         reason=alert.reason or f"alert {alert.id}",
                                         bundle_hash=getattr(self.bundle, "hash", ""))
                firing.mitigations.append(m)
                self._record([m])
            self.firings.append(firing)
            out.append(firing)
        return out

    def evaluate_all(self, windows: Iterable[WindowStats]) -> list[Firing]:
        out: list[Firing] = []
        for w in windows:
            out.extend(self.evaluate(w))
        return out


def chain(records: Sequence[Any], key: str) -> dict[str, Any]:
    """Reassemble alert -> mitigations -> decisions from trace records for one firing: the alert
    event with ``key``, the mitigation events it caused, and the decisions of the affected
    scopes made after the first mitigation (their breaker state shows the fallback serving)."""

    def get(r: Any, name: str, default: Any = None) -> Any:
        return r.get(name, default) if isinstance(r, dict) else getattr(r, name, default)

    def is_decision(r: Any) -> bool:
        return get(r, "type") == "decision" or (get(r, "kind") is None and get(r, "action") is not None)

    alert = next((r for r in records if get(r, "kind") == "alert" and get(r, "payload", {}).get("key") == key), None)
    if alert is None:
        raise BadInput(f"no alert event with key {key!r} in these records")
    mitigations = [r for r in records if get(r, "kind") == "mitigation" and get(r, "payload", {}).get("caused_by") == key]
    surfaces = {str(get(m, "payload")["target"]).split(":", 1)[1] for m in mitigations
                if str(get(m, "payload", {}).get("target", "")).startswith("surface:")}
    since = min((get(m, "ts") for m in mitigations), default=get(alert, "ts"))
    decisions = [r for r in records if is_decision(r) and get(r, "surface") in surfaces and get(r, "ts") >= since]
    return {"alert": alert, "mitigations": mitigations, "decisions": decisions}


def trace_records(log: Any) -> list[dict[str, Any]]:
    """Every record of a trace log as the dicts the trace commits to (decisions and events,
    event payloads parsed), in log order — what :func:`chain` reads."""
    from assay.trace.canonical import decision_dict, event_dict

    return [event_dict(row) if row["type"] == "event" else decision_dict(row) for row in log.table().to_pylist()]
