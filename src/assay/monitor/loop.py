"""The watch loop behind ``assay monitor run``: poll a decision source, close windows, evaluate
alerts, run mitigations, run scheduled red-team / evaluation suites, stop cleanly on SIGINT or
SIGTERM (the current step finishes, open windows are flushed and evaluated, sources closed).

Decision sources:

- :class:`RedisSlateSource` reads the guard stream worker's output stream (slates written with
  their decisions, ``StreamWorker(decisions_in_output=True)``), remembering the last id;
- :class:`TraceSource` tails the decision log (``assay.trace.TraceLog``) from a record index;
- :class:`InboxSource` drains an in-process list (a guard's decision sink in the same process).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from assay.errors import AssayError, BadInput, Unavailable
from assay.monitor.engine import Firing, Monitor
from assay.monitor.windows import TumblingWindows


class InboxSource:
    """Records appended to ``inbox`` by something in this process (thread-safe drain)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Any] = []

    def extend(self, records: Sequence[Any]) -> None:
        with self._lock:
            self._items.extend(records)

    def poll(self) -> list[Any]:
        with self._lock:
            out, self._items = self._items, []
        return out

    def close(self) -> None:
        return None


class RedisSlateSource:
    """Decisions from the guard worker's output stream (``XREAD`` after the last id seen)."""

    def __init__(self, url: str, stream: str = "assay:guard:out", *, start_id: str = "0-0", count: int = 1000):
        import redis

        self.client = redis.Redis.from_url(url)
        self.stream = stream
        self.last_id = start_id
        self.count = count
        self.slates_without_decisions = 0
        try:
            self.client.ping()
        except redis.RedisError as e:
            raise Unavailable(f"cannot reach Redis at {url}: {e}") from e

    def poll(self) -> list[dict[str, Any]]:
        import orjson
        import redis

        try:
            got = self.client.xread({self.stream: self.last_id}, count=self.count)
        except redis.RedisError as e:
            raise Unavailable(f"reading {self.stream}: {e}") from e
        out: list[dict[str, Any]] = []
        for _, entries in got:
            for entry_id, fields in entries:
                self.last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                raw = fields.get(b"slate") or fields.get("slate") or b"{}"
                slate = orjson.loads(raw)
                decisions = slate.get("decisions")
                if decisions is None:
                    self.slates_without_decisions += 1
                    continue
                out.extend(decisions)
        return out

    def close(self) -> None:
        self.client.close()


class TraceSource:
    """New decision rows of a trace log, from record index ``start``."""

    def __init__(self, log: Any, start: int = 0):
        self.log = log
        self.next_index = start

    def poll(self) -> list[dict[str, Any]]:
        size = self.log.size
        if size <= self.next_index:
            return []
        table = self.log.table(["index", "type", "ts", "surface", "request_id", "action", "rule_ids",
                                "breaker_state", "score_before"])
        import pyarrow.compute as pc

        table = table.filter(pc.and_(pc.greater_equal(table["index"], self.next_index), pc.equal(table["type"], "decision")))
        self.next_index = size
        return table.to_pylist()

    def close(self) -> None:
        return None


@dataclass
class ScheduledJob:
    """Something to run every ``every_s`` seconds (a red-team regression suite, an evaluation
    suite); its result is recorded as an ``Event(kind="scheduled_run")``."""

    name: str
    every_s: float
    run: Callable[[], dict[str, Any]]
    next_at: float = 0.0
    runs: int = 0
    last: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoopStats:
    polls: int = 0
    records: int = 0
    windows: int = 0
    alerts: int = 0
    mitigations: int = 0
    jobs: int = 0
    errors: int = 0
    last_error: str = ""
    stopped_by: str = ""


class WatchLoop:
    def __init__(self, monitor: Monitor, source: Any, windows: TumblingWindows, *, jobs: Sequence[ScheduledJob] = (),
                 poll_s: float = 0.5, clock: Callable[[], float] = time.time,
                 on_firing: Callable[[Firing], None] | None = None):
        if poll_s <= 0:
            raise BadInput(f"poll interval must be > 0 seconds, got {poll_s}")
        self.monitor = monitor
        self.source = source
        self.windows = windows
        self.jobs = list(jobs)
        self.poll_s = poll_s
        self.clock = clock
        self.on_firing = on_firing
        self.stats = LoopStats()
        self.stop_event = threading.Event()

    def _handle(self, firings: list[Firing]) -> list[Firing]:
        for f in firings:
            self.stats.alerts += 1
            self.stats.mitigations += len(f.mitigations)
            if self.on_firing:
                self.on_firing(f)
        return firings

    def step(self) -> list[Firing]:
        """One poll: new records -> closed windows -> alerts; then due jobs."""
        records = self.source.poll()
        self.stats.polls += 1
        self.stats.records += len(records)
        closed = self.windows.add(records)
        self.stats.windows += len(closed)
        firings = self._handle(self.monitor.evaluate_all(closed))
        now = self.clock()
        for job in self.jobs:
            if now >= job.next_at:
                job.next_at = now + job.every_s
                self._run_job(job)
        return firings

    def _run_job(self, job: ScheduledJob) -> None:
        from assay.records import Event

        started = time.perf_counter()
        try:
            result = job.run()
            ok, error = True, None
        except AssayError as e:
            result, ok, error = {}, False, e.render()
        job.runs += 1
        job.last = {"ok": ok, "error": error, "result": result, "wall_s": round(time.perf_counter() - started, 3)}
        self.stats.jobs += 1
        if self.monitor.recorder is not None:
            payload = json.loads(json.dumps({"job": job.name, **job.last}, default=str))
            self.monitor.recorder([Event(kind="scheduled_run", ts=self.clock(), subject=job.name, payload=payload)])

    def flush(self) -> list[Firing]:
        return self._handle(self.monitor.evaluate_all(self.windows.flush()))

    def stop(self, reason: str = "stop requested") -> None:
        self.stats.stopped_by = reason
        self.stop_event.set()

    def run(self, *, max_steps: int | None = None, install_signals: bool = True) -> LoopStats:
        """Loop until stopped (SIGINT/SIGTERM, :meth:`stop`, or ``max_steps``); always flushes
        the open windows and closes the source before returning."""
        previous: dict[int, Any] = {}
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda signum, _frame: self.stop(signal.Signals(signum).name))
        steps = 0
        try:
            while not self.stop_event.is_set():
                try:
                    self.step()
                except Unavailable as e:  # a source hiccup: count it and keep watching
                    self.stats.errors += 1
                    self.stats.last_error = e.message
                steps += 1
                if max_steps is not None and steps >= max_steps:
                    self.stats.stopped_by = self.stats.stopped_by or "max_steps"
                    break
                self.stop_event.wait(self.poll_s)
            self.flush()
        finally:
            with contextlib.suppress(Exception):
                self.source.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.stats
