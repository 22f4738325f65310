"""The bounded asynchronous queue between serving and the decision log.

Serving must never wait on the trace. Each slate (and each breaker event) is put on a bounded
queue; one background thread turns slates into :class:`assay.records.Decision` records (off the
hot path) and hands them to the sink in batches — in production ``assay.trace.TraceLog.append``,
but any callable taking a list of records works. When the queue is full the configured behaviour
applies and is counted:

- ``drop``: the item is discarded at once and ``dropped`` goes up (serving never waits);
- ``backpressure``: the caller waits up to ``put_timeout_s`` for room (its budget), and if there
  is still none the item is discarded and ``dropped_after_wait`` goes up.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any

from assay.errors import BadInput

Sink = Callable[[list[Any]], Any]


@dataclass
class SinkStats:
    enqueued: int = 0
    dropped: int = 0
    dropped_after_wait: int = 0
    waited_s: float = 0.0
    written_records: int = 0
    sink_errors: int = 0
    last_error: str = ""


_STOP = object()


class DecisionQueue:
    """A bounded queue drained by one daemon thread into ``sink(records)``."""

    def __init__(self, sink: Sink, *, maxsize: int = 1024, when_full: str = "drop", put_timeout_s: float = 0.002,
                 batch_records: int = 5000, flush_interval_s: float = 0.05):
        if when_full not in ("drop", "backpressure"):
            raise BadInput(f"when_full must be 'drop' or 'backpressure', got {when_full!r}")
        if maxsize < 1:
            raise BadInput("the decision queue needs room for at least one item")
        self.sink = sink
        self.when_full = when_full
        self.put_timeout_s = put_timeout_s
        self.batch_records = batch_records
        self.flush_interval_s = flush_interval_s
        self.stats = SinkStats()
        self._q: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self._stats_lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, name="assay-guard-decisions", daemon=True)
        self._closed = False
        self.processed = 0  # items whose records were handed to the sink
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Queue a slate (its decisions are materialised later) or a record; False if discarded."""
        if self._closed:
            raise RuntimeError("decision queue is closed")
        try:
            self._q.put_nowait(item)
        except queue.Full:
            if self.when_full == "drop":
                with self._stats_lock:
                    self.stats.dropped += 1
                return False
            started = time.perf_counter()
            try:
                self._q.put(item, timeout=self.put_timeout_s)
            except queue.Full:
                with self._stats_lock:
                    self.stats.dropped_after_wait += 1
                    self.stats.waited_s += time.perf_counter() - started
                return False
            with self._stats_lock:
                self.stats.waited_s += time.perf_counter() - started
        with self._stats_lock:
            self.stats.enqueued += 1
        return True

    __call__ = submit

    def _records_of(self, item: Any) -> list[Any]:
        if getattr(self.sink, "accepts_slates", False):
            return [item]  # the sink builds its own (columnar) records
        decisions = getattr(item, "decisions", None)
        if decisions is not None:
            events = list(getattr(item, "events", ()))
            inputs = getattr(item, "inputs", None)
            if inputs is not None:  # what it was decided from, for explanations
                events.append(inputs.to_event(item.request_id, item.ts))
            return [*decisions, *events]
        return [item]

    def _drain(self) -> None:
        pending: list[Any] = []
        pending_items = 0
        last_flush = time.monotonic()
        stop = False
        while not stop:
            try:
                item = self._q.get(timeout=self.flush_interval_s)
            except queue.Empty:
                item = None
            if item is _STOP:
                stop = True
            elif item is not None:
                try:
                    pending.extend(self._records_of(item))
                except Exception as e:  # a slate that cannot be turned into records is counted
                    with self._stats_lock:
                        self.stats.sink_errors += 1
                        self.stats.last_error = f"{type(e).__name__}: {e}"
                pending_items += 1
            due = stop or len(pending) >= self.batch_records or self._q.empty() or time.monotonic() - last_flush >= self.flush_interval_s
            if pending_items and due:
                if pending:
                    self._write(pending)
                with self._stats_lock:
                    self.processed += pending_items
                pending, pending_items = [], 0
                last_flush = time.monotonic()

    def _write(self, records: list[Any]) -> None:
        try:
            self.sink(records)
            with self._stats_lock:
                self.stats.written_records += len(records)
        except Exception as e:  # the trace being down must not take serving down; it is counted
            with self._stats_lock:
                self.stats.sink_errors += 1
                self.stats.last_error = f"{type(e).__name__}: {e}"

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued so far has been handed to the sink; False on timeout."""
        with self._stats_lock:
            target = self.stats.enqueued
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._stats_lock:
                if self.processed >= target:
                    return True
            time.sleep(0.002)
        return False

    def close(self, timeout_s: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(_STOP)
        self._thread.join(timeout_s)
        close = getattr(self.sink, "close", None)
        if close is not None and not self._thread.is_alive():
            close()


class JsonlSink:
    """Decision and event records appended as JSON lines to a file (one ``write`` per batch)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("ab")

    def __call__(self, records: list[Any]) -> None:
        import orjson

        # orjson writes the records (dataclasses) itself, the same bytes as via to_dict() at a tenth of
        # the cost: dataclasses.asdict deep-copies every field, and this runs beside serving
        lines = b"".join(orjson.dumps(r if is_dataclass(r) or not hasattr(r, "to_dict") else r.to_dict()) + b"\n"
                         for r in records)
        self._fh.write(lines)
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class TraceSink:
    """Slates and events into an ``assay.trace.TraceLog``: each batch of slates becomes one Arrow
    table (``Slate.to_arrow``, no per-decision Python objects) for ``append_table``; breaker
    events go through ``append``."""

    accepts_slates = True

    def __init__(self, log: Any):
        self.log = log

    @classmethod
    def open(cls, path: str | Path | None = None, *, checkpoint_every: float | None = 5.0) -> TraceSink:
        from assay.trace import TraceLog

        return cls(TraceLog.open(path, checkpoint_every=checkpoint_every))

    def __call__(self, items: list[Any]) -> None:
        import pyarrow as pa

        tables = [i.to_arrow() for i in items if hasattr(i, "to_arrow") and i.n_candidates + len(i.fallback_ids)]
        events = [i for i in items if not hasattr(i, "to_arrow")]
        # each slate's inputs (what it was decided from) follow its decisions, for explanations
        events += [i.inputs.to_event(i.request_id, i.ts) for i in items
                   if hasattr(i, "to_arrow") and getattr(i, "inputs", None) is not None and i.n_candidates + len(i.fallback_ids)]
        if tables:
            self.log.append_table(pa.concat_tables(tables) if len(tables) > 1 else tables[0])
        if events:
            self.log.append(events)

    def close(self) -> None:
        self.log.close()
