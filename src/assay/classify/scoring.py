"""Scoring files row by row: ``assay classify NAME --input X.jsonl --text-field F --output Y.jsonl``.

Every input row gives exactly one output row. A row that cannot be scored gets a per-row
``_error`` naming what is wrong (invalid UTF-8 at byte N, not JSON, no such field, empty text)
and its scores are ``null``; the batch never stops for one bad row. Texts longer than the
normaliser's cap are scored on their first ``MAX_CHARS`` characters and marked ``_truncated``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay.classify.normalise import MAX_CHARS
from assay.errors import BadInput, LocatedError
from assay.files import parse_json


@dataclass
class Row:
    number: int  # 1-based line (JSONL) or row (Parquet) number
    record: dict[str, Any] | None
    error: str | None = None


def read_jsonl(path: Path) -> Iterator[Row]:
    """Rows of a JSON Lines file, reading bytes so that invalid UTF-8 is a per-row error."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Row(number, None, f"invalid UTF-8 at byte {e.start}")
                continue
            try:
                obj = parse_json(text, str(path), first_line=number)
            except LocatedError as e:  # nesting too deep and 5,000-digit integers included
                yield Row(number, None, f"{e.message} at column {e.location.column}")
                continue
            if not isinstance(obj, dict):
                yield Row(number, None, f"expected a JSON object, got {type(obj).__name__}")
                continue
            yield Row(number, obj)


def read_parquet(path: Path, batch_size: int = 4096) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise BadInput(f"{path}: not a readable Parquet file ({e})") from e
    number = 0
    for batch in reader.iter_batches(batch_size=batch_size):
        for record in batch.to_pylist():
            number += 1
            yield Row(number, record)


def read_rows(path: Path) -> Iterator[Row]:
    """JSONL or Parquet by suffix."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"input file {path} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        return read_parquet(path)
    return read_jsonl(path)


def count_rows(path: Path) -> int | None:
    """Rows in the file (for the progress bar), cheaply: line count or Parquet metadata (None for
    a file that is not Parquet: ``read_parquet`` says so)."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # pyarrow raises several types for a bad file; read_parquet reports it
            return None
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def text_of(row: Row, field: str) -> tuple[str | None, str | None]:
    """(text, error) for a row."""
    if row.error is not None or row.record is None:
        return None, row.error
    if field not in row.record:
        return None, f"no field {field!r}"
    value = row.record[field]
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, f"field {field!r}: invalid UTF-8 at byte {e.start}"
    if not isinstance(value, str):
        return None, f"field {field!r} is {type(value).__name__}, not a string"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # a JSON "\ud800" escape: this row is wrong, not the batch
        return None, f"field {field!r}: invalid Unicode at character {e.start} (a lone surrogate)"
    return value, None


@dataclass
class ScoreSummary:
    rows: int = 0
    scored: int = 0
    errors: int = 0
    truncated: int = 0
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    error_examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "scored": self.scored,
            "errors": self.errors,
            "truncated": self.truncated,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows / self.seconds, 1) if self.seconds else None,
            "versions": self.versions,
            "error_examples": self.error_examples[:5],
        }


def score_rows(classifiers: dict[str, Any], rows: list[Row], text_field: str, top_k: int = 3) -> list[dict[str, Any]]:
    """Score one chunk of rows with every classifier; returns the output records."""
    from assay.classify import normalise as norm

    texts: list[str] = []
    positions: list[int] = []
    out: list[dict[str, Any]] = []
    for row in rows:
        record = dict(row.record) if row.record is not None else {"_line": row.number}
        text, error = text_of(row, text_field)
        if text is not None and not norm.normalise(text):
            error = "empty text (nothing left after normalisation)"
        if text is not None and len(text) > MAX_CHARS:
            record["_truncated"] = True
        if error is not None:
            record["_line"] = row.number
            record["_error"] = error
            for name in classifiers:
                record[f"{name}_score"] = None
                record[f"{name}_label"] = None
        else:
            positions.append(len(out))
            texts.append(text)  # type: ignore[arg-type]
        out.append(record)
    if texts:
        from assay.classify.model import Classifier, score_many

        heads = {name: clf for name, clf in classifiers.items() if isinstance(clf, Classifier)}
        shared = score_many(heads, texts)  # one encoding per (normalisation, cut), not per head
        for name, clf in classifiers.items():
            scores = shared[name] if name in shared else np.asarray(clf.score(texts), dtype=float)
            labels = scores >= clf.threshold
            matches = clf.match(texts, k=top_k) if name == "claim_match" else None
            for j, pos in enumerate(positions):
                out[pos][f"{name}_score"] = round(float(scores[j]), 6)
                out[pos][f"{name}_label"] = bool(labels[j])
                if matches is not None:
                    out[pos][f"{name}_top"] = [
                        {"claim_id": m.claim_id, "claim": m.claim, "verdict": m.verdict, "similarity": m.similarity} for m in matches[j]
                    ]
    return out


def score_file(
    names: list[str],
    input_path: Path,
    text_field: str,
    output_path: Path,
    *,
    chunk: int = 256,
    on_progress: Callable[[int], None] | None = None,
) -> ScoreSummary:
    """Score every row of ``input_path`` with the classifiers ``names`` into ``output_path`` (JSONL).

    The output is written to a temporary file and renamed at the end, so a failed run leaves no
    half-written output."""
    import time

    from assay.classify import load_classifier

    if not names:
        raise BadInput("name at least one classifier")
    classifiers = {name: load_classifier(name) for name in names}
    summary = ScoreSummary(versions={name: clf.version for name, clf in classifiers.items()})
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(output_path.name + ".partial")
    started = time.perf_counter()
    with open(tmp, "w", encoding="utf-8") as out:
        buffer: list[Row] = []

        def flush() -> None:
            for record in score_rows(classifiers, buffer, text_field):
                # escaped where other fields of the row hold text that is not valid Unicode
                line = json.dumps(record, ensure_ascii=False, default=str)
                try:
                    out.write(line + "\n")
                except UnicodeEncodeError:
                    out.write(json.dumps(record, default=str) + "\n")
                summary.rows += 1
                if "_error" in record:
                    summary.errors += 1
                    if len(summary.error_examples) < 5:
                        summary.error_examples.append(f"row {record.get('_line', '?')}: {record['_error']}")
                else:
                    summary.scored += 1
                summary.truncated += int(bool(record.get("_truncated")))
            if on_progress is not None:
                on_progress(len(buffer))
            buffer.clear()

        for row in read_rows(input_path):
            buffer.append(row)
            if len(buffer) >= chunk:
                flush()
        if buffer:
            flush()
    tmp.replace(output_path)
    summary.seconds = time.perf_counter() - started
    return summary
