"""``assay label``: score content at ingestion and write the labels, with the labeler version,
into the guard's label store (``assay.store.labels``: a Parquet file or Redis).

Two modes:

- **batch**: a Parquet or JSONL file of ``(id, text)`` rows. Resumable: ids whose labels are all
  present under the same labeler version are skipped, and a Parquet store is saved every
  ``flush_every`` rows (atomically), so a killed run continues where it stopped.
- **stream**: a Redis Streams consumer group. Each message carries the id and text fields; it is
  acknowledged only after its labels are written, and on start the consumer first re-reads its
  own pending (delivered, unacknowledged) messages, so nothing is lost when a worker dies.

Rows that cannot be scored (no id, no text, invalid UTF-8, nothing left after normalisation) are
counted and reported, not written and not fatal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import BadInput


def labeler_version(classifiers: dict[str, Any]) -> str:
    """One version string for a set of classifiers: ``toxicity@<sha12>;hate@<sha12>``."""
    return ";".join(f"{name}@{clf.sha256[:12]}" for name, clf in sorted(classifiers.items()))


@dataclass
class LabelSummary:
    seen: int = 0
    labelled: int = 0
    skipped_done: int = 0
    errors: int = 0
    seconds: float = 0.0
    version: str = ""
    error_examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "labelled": self.labelled,
            "skipped_already_labelled": self.skipped_done,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "labelled_per_s": round(self.labelled / self.seconds, 1) if self.seconds else None,
            "version": self.version,
            "error_examples": self.error_examples[:5],
        }

    def error(self, where: str, message: str) -> None:
        self.errors += 1
        if len(self.error_examples) < 5:
            self.error_examples.append(f"{where}: {message}")


class StoreTarget:
    """Where labels go: a Parquet file (loaded if it exists, saved atomically) or Redis."""

    def __init__(self, spec: str):
        from assay.store.labels import InMemoryLabelStore, RedisLabelStore

        self.spec = spec
        self.parquet: Path | None = None
        if spec.startswith(("redis://", "rediss://", "unix://")):
            self.store: Any = RedisLabelStore(spec, timeout_s=5.0, connect_timeout_s=5.0)
        else:
            self.parquet = Path(spec)
            self.store = InMemoryLabelStore.from_parquet(self.parquet) if self.parquet.exists() else InMemoryLabelStore()

    def done(self, ids: list[str], names: list[str], version: str) -> np.ndarray:
        """Which ids already carry every label under this version."""
        if not ids:
            return np.zeros(0, dtype=bool)
        batch = self.store.get(ids, names)
        ok = np.ones(len(ids), dtype=bool)
        for name in names:
            ok &= batch.present[name]
        return ok & (np.asarray(batch.versions, dtype=object) == version)

    def put(self, ids: list[str], labels: dict[str, np.ndarray], version: str) -> None:
        if ids:
            self.store.put(ids, {k: np.clip(v, 0.0, 1.0) for k, v in labels.items()}, version)

    def save(self) -> None:
        if self.parquet is not None:
            tmp = self.parquet.with_name(self.parquet.name + f".tmp{os.getpid()}")
            self.store.to_parquet(tmp)
            tmp.replace(self.parquet)

    def close(self) -> None:
        self.save()
        if hasattr(self.store, "close"):
            self.store.close()


def _score_batch(classifiers: dict[str, Any], ids: list[str], texts: list[str]) -> dict[str, np.ndarray]:
    from assay.classify.model import Classifier, score_many

    heads = {name: clf for name, clf in classifiers.items() if isinstance(clf, Classifier)}
    out = score_many(heads, texts)  # toxicity, hate and offensive share one encoding
    for name, clf in classifiers.items():
        if name not in out:
            out[name] = np.asarray(clf.score(texts), dtype=float)
    return out


def _clean(record: dict[str, Any] | None, id_field: str, text_field: str) -> tuple[str | None, str | None, str | None]:
    """(id, text, error)."""
    from assay.classify import normalise as norm

    if record is None:
        return None, None, "unreadable row"
    item_id = record.get(id_field)
    if isinstance(item_id, bytes):
        item_id = item_id.decode("utf-8", "replace")
    if item_id is None or (isinstance(item_id, str) and not item_id):
        return None, None, f"no {id_field!r}"
    item_id = str(item_id)
    text = record.get(text_field)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            return item_id, None, f"{text_field!r}: invalid UTF-8 at byte {e.start}"
    if not isinstance(text, str):
        return item_id, None, f"no text in {text_field!r}"
    if not norm.normalise(text):
        return item_id, None, "empty text (nothing left after normalisation)"
    return item_id, text, None


def label_batch(
    names: list[str],
    input_path: Path,
    store_spec: str,
    *,
    id_field: str = "id",
    text_field: str = "text",
    chunk: int = 256,
    flush_every: int = 4096,
    on_progress: Callable[[int], None] | None = None,
) -> LabelSummary:
    """Label every row of a Parquet/JSONL file into the store (see module docstring)."""
    from assay.classify import load_classifier
    from assay.classify.scoring import read_rows

    classifiers = {name: load_classifier(name) for name in names}
    version = labeler_version(classifiers)
    summary = LabelSummary(version=version)
    target = StoreTarget(store_spec)
    started = time.perf_counter()
    since_flush = 0
    try:
        buffer: list[tuple[str, str]] = []

        def flush() -> None:
            nonlocal since_flush
            ids = [i for i, _ in buffer]
            done = target.done(ids, list(classifiers), version)
            todo = [(i, t) for (i, t), d in zip(buffer, done, strict=True) if not d]
            summary.skipped_done += int(done.sum())
            if todo:
                labels = _score_batch(classifiers, [i for i, _ in todo], [t for _, t in todo])
                target.put([i for i, _ in todo], labels, version)
                summary.labelled += len(todo)
                since_flush += len(todo)
            if since_flush >= flush_every:
                target.save()
                since_flush = 0
            if on_progress is not None:
                on_progress(len(buffer))
            buffer.clear()

        seen_ids: set[str] = set()
        for row in read_rows(input_path):
            summary.seen += 1
            item_id, text, error = _clean(row.record if row.error is None else None, id_field, text_field)
            if row.error is not None:
                error = row.error
            if error is not None or item_id is None or text is None:
                summary.error(f"row {row.number}", error or "unreadable")
                if on_progress is not None:
                    on_progress(1)
                continue
            if item_id in seen_ids:
                summary.error(f"row {row.number}", f"duplicate id {item_id!r} (first one kept)")
                continue
            seen_ids.add(item_id)
            buffer.append((item_id, text))
            if len(buffer) >= chunk:
                flush()
        if buffer:
            flush()
    finally:
        target.close()
    summary.seconds = time.perf_counter() - started
    return summary


def label_stream(
    names: list[str],
    redis_url: str,
    stream: str,
    store_spec: str,
    *,
    group: str = "assay-label",
    consumer: str | None = None,
    id_field: str = "id",
    text_field: str = "text",
    count: int = 128,
    block_ms: int = 1000,
    max_messages: int | None = None,
    idle_exit_s: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LabelSummary:
    """Consume a Redis stream with a consumer group and label each message (see module docstring).

    Stops after ``max_messages``, after ``idle_exit_s`` seconds without a message, or when
    ``should_stop()`` says so (the CLI wires that to Ctrl-C)."""
    import redis

    from assay.classify import load_classifier

    classifiers = {name: load_classifier(name) for name in names}
    version = labeler_version(classifiers)
    summary = LabelSummary(version=version)
    consumer = consumer or f"labeler-{os.getpid()}"
    client = redis.Redis.from_url(redis_url, socket_timeout=max(5.0, block_ms / 1000 + 5))
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.exceptions.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise BadInput(f"cannot create consumer group {group!r} on {stream!r}: {e}") from e
    except (redis.exceptions.ConnectionError, OSError) as e:
        from assay.errors import Unavailable

        raise Unavailable(f"Redis at {redis_url} is unreachable: {e}") from e
    target = StoreTarget(store_spec)
    started = time.perf_counter()
    last_message = time.monotonic()
    pending_first = True  # re-read our own delivered-but-unacknowledged messages first
    try:
        while True:
            if should_stop is not None and should_stop():
                break
            if max_messages is not None and summary.seen >= max_messages:
                break
            want = count if max_messages is None else max(1, min(count, max_messages - summary.seen))
            reply = client.xreadgroup(group, consumer, {stream: "0" if pending_first else ">"}, count=want, block=None if pending_first else block_ms)
            messages = reply[0][1] if reply else []
            if pending_first and not messages:
                pending_first = False
                continue
            if not messages:
                if idle_exit_s is not None and time.monotonic() - last_message >= idle_exit_s:
                    break
                continue
            last_message = time.monotonic()
            ids: list[str] = []
            texts: list[str] = []
            ack: list[bytes] = []
            for message_id, fields in messages:
                summary.seen += 1
                ack.append(message_id)
                record = {k.decode("utf-8", "replace") if isinstance(k, bytes) else k: v for k, v in (fields or {}).items()}
                item_id, text, error = _clean(record, id_field, text_field)
                if error is not None or item_id is None or text is None:
                    summary.error(f"message {message_id.decode() if isinstance(message_id, bytes) else message_id}", error or "unreadable")
                    continue
                if item_id in ids:
                    continue
                ids.append(item_id)
                texts.append(text)
            if ids:
                done = target.done(ids, list(classifiers), version)
                summary.skipped_done += int(done.sum())
                todo = [k for k in range(len(ids)) if not done[k]]
                if todo:
                    labels = _score_batch(classifiers, [ids[k] for k in todo], [texts[k] for k in todo])
                    target.put([ids[k] for k in todo], labels, version)
                    summary.labelled += len(todo)
                target.save()
            client.xack(stream, group, *ack)
            if on_progress is not None:
                on_progress(len(messages))
    finally:
        target.close()
        client.close()
    summary.seconds = time.perf_counter() - started
    return summary
