"""The mutation campaign: every kind of tampering with a written log is detected, and the
message says what and where."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from trace_helpers import make_decisions

from assay.trace import TraceLog, canonical
from assay.trace.checkpoint import Checkpoint, Signer


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    import os

    home = tmp_path_factory.mktemp("tamper-home")
    old = os.environ.get("ASSAY_HOME")
    os.environ["ASSAY_HOME"] = str(home)
    try:
        root = home / "log"
        with TraceLog.open(root, segment_records=30) as log:
            for start in range(0, 90, 15):
                log.append(make_decisions(15, start=start))
            assert log.verify().ok
    finally:
        if old is None:
            os.environ.pop("ASSAY_HOME", None)
        else:
            os.environ["ASSAY_HOME"] = old
    return home


@pytest.fixture
def copy(pristine, tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    shutil.copytree(pristine, home)
    monkeypatch.setenv("ASSAY_HOME", str(home))
    return home / "log"


def _problems(root: Path) -> list[str]:
    with TraceLog.open(root, read_only=True) as log:
        report = log.verify()
    assert not report.ok, "tampering was not detected"
    return report.problems


def _segments(root: Path) -> list[Path]:
    return sorted((root / "segments").glob("*.arrows"))


def _rewrite(path: Path, table: pa.Table) -> None:
    from assay.trace.log import segment_bytes

    path.write_bytes(segment_bytes(table.combine_chunks().to_batches()))


def _table(path: Path) -> pa.Table:
    return pa.ipc.open_stream(path.read_bytes()).read_all()


def test_untouched_copy_verifies(copy: Path) -> None:
    with TraceLog.open(copy, read_only=True) as log:
        report = log.verify()
    assert report.ok and report.records == 90 and report.checkpoints == 6


@pytest.mark.parametrize("seed", range(12))
def test_flip_one_byte_anywhere(copy: Path, seed: int) -> None:
    rng = random.Random(seed)
    segment = rng.choice(_segments(copy))
    data = bytearray(segment.read_bytes())
    offset = rng.randrange(len(data))
    data[offset] ^= 1 << rng.randrange(8)
    segment.write_bytes(bytes(data))
    problems = _problems(copy)
    assert any(segment.name in p for p in problems), problems


def test_flip_byte_in_a_value_names_the_record(copy: Path) -> None:
    segment = _segments(copy)[1]
    data = segment.read_bytes()
    at = data.index(b"item37")
    segment.write_bytes(data[:at] + b"item99" + data[at + 6:])
    problems = _problems(copy)
    assert any(f"segment {segment.name} row 7 (index 37)" in p and "altered" in p for p in problems), problems


def test_delete_a_record(copy: Path) -> None:
    segment = _segments(copy)[0]
    table = _table(segment)
    _rewrite(segment, pa.concat_tables([table.slice(0, 5), table.slice(6)]))
    problems = _problems(copy)
    assert any(f"segment {segment.name} row 5 holds index 6 where 5 belongs" in p for p in problems), problems


def test_reorder_two_records(copy: Path) -> None:
    segment = _segments(copy)[2]
    table = _table(segment)
    order = list(range(table.num_rows))
    order[3], order[4] = order[4], order[3]
    _rewrite(segment, table.take(order))
    problems = _problems(copy)
    assert any(f"segment {segment.name} row 3 holds index 64 where 63 belongs" in p for p in problems), problems


def test_rewrite_content_with_consistent_hash(copy: Path) -> None:
    """An attacker who edits a decision and recomputes its record hash still breaks the signed root."""
    import hashlib

    segment = _segments(copy)[0]
    table = _table(segment)
    rows = table.to_pylist()
    rows[3]["action"] = "allow"  # was a drop
    rows[3]["record_hash"] = hashlib.sha256(canonical.reference_canonical(rows[3])).digest()
    _rewrite(segment, pa.Table.from_pylist(rows, schema=canonical.SEGMENT_SCHEMA))
    problems = _problems(copy)
    assert any("different root than the signed one" in p and "index 3 " in p for p in problems), problems


def test_truncate_a_segment(copy: Path) -> None:
    segment = _segments(copy)[1]
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) // 2])
    problems = _problems(copy)
    assert any(segment.name in p and ("not a complete record batch" in p or "truncated" in p) for p in problems), problems


def test_truncate_the_last_segment_is_not_repaired_away(copy: Path) -> None:
    """A writer opening the log must not 'recover' by cutting records a checkpoint signed."""
    segment = _segments(copy)[-1]
    data = segment.read_bytes()
    segment.write_bytes(data[:-100])
    with TraceLog.open(copy) as log:
        assert log.problems and any("signed checkpoint covers records beyond it" in p for p in log.problems)
    assert segment.stat().st_size == len(data) - 100  # evidence kept


def test_swap_segments(copy: Path) -> None:
    a, b = _segments(copy)[0], _segments(copy)[1]
    tmp = a.with_suffix(".tmp")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    problems = _problems(copy)
    assert any(f"segment {a.name} holds records from index 30 but its name says 0 (segments swapped" in p for p in problems), problems


def test_delete_a_segment(copy: Path) -> None:
    _segments(copy)[1].unlink()
    problems = _problems(copy)
    assert any("starts at index 60 but the segments before it end at 30" in p for p in problems), problems


def test_replace_a_checkpoint_with_another(copy: Path) -> None:
    notes = sorted((copy / "checkpoints").glob("*.note"))
    notes[-1].write_bytes(notes[0].read_bytes())
    problems = _problems(copy)
    assert any(notes[-1].name in p and "file name says size" in p for p in problems), problems


def test_forge_a_checkpoint_with_another_key(copy: Path, tmp_path) -> None:
    notes = sorted((copy / "checkpoints").glob("*.note"))
    forger = Signer.load_or_create(tmp_path / "forger.key", "assay.local/trace")
    checkpoint = Checkpoint("assay.local/trace", 90, b"\x07" * 32, 1.0)
    notes[-1].write_text(checkpoint.sign(forger))
    problems = _problems(copy)
    assert any(notes[-1].name in p and "no signature by the trusted key" in p for p in problems), problems


def test_forge_a_signature(copy: Path) -> None:
    notes = sorted((copy / "checkpoints").glob("*.note"))
    text = notes[2].read_text()
    body, _, sig = text.rpartition("\n\n")
    lines = body.split("\n")
    lines[2] = lines[2][:-4] + ("AAA=" if not lines[2].endswith("AAA=") else "BBB=")  # another root
    notes[2].write_text("\n".join(lines) + "\n\n" + sig)
    problems = _problems(copy)
    assert any(notes[2].name in p and "does not verify" in p for p in problems), problems


def test_replace_the_segment_manifest(copy: Path) -> None:
    manifests = sorted((copy / "checkpoints").glob("*.manifest.json"))
    manifests[-1].write_bytes(manifests[0].read_bytes())
    problems = _problems(copy)
    assert any("manifest" in p and "not the one the note signed" in p for p in problems), problems
