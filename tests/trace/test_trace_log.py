"""The log end to end on real files: append, verify, proofs a third party checks, why, aggregates,
erasure, recovery, any fsspec filesystem, and bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pytest
from trace_helpers import make_decisions

from assay.errors import BadInput
from assay.records import Event
from assay.trace import SignatureError, TraceLog, canonical, merkle, proofs
from assay.trace.checkpoint import Verifier
from assay.trace.log import encode_batch, read_batches


@pytest.fixture
def log(tmp_path):
    with TraceLog.open(tmp_path / "log", segment_records=40) as opened:
        yield opened


def test_append_verify_and_proofs(log: TraceLog) -> None:
    r1 = log.append(make_decisions(50))
    r2 = log.append([*make_decisions(5, start=50), Event("breaker.transition", time.time(), "for_you", {"to": "open"})])
    assert (r1.first_index, r1.count, r2.first_index, r2.tree_size) == (0, 50, 50, 56)
    assert r2.checkpoint_size == 56 and log.checkpoint_sizes() == [50, 56]
    assert len(log.segment_names()) == 2  # rolled after 40 records
    report = log.verify()
    assert report.ok, report.problems
    assert report.records == 56 and report.checkpoints == 2

    # A third party checks an inclusion proof with only the public key.
    vkey = Verifier.parse(log.verifier.vkey())
    bundle = json.loads(json.dumps(log.prove_inclusion(17)))
    assert "included" in proofs.check_bundle(bundle, vkey)
    assert json.loads(bundle["record_json"])["item_id"] == "item17"
    tampered = dict(bundle, record_json=bundle["record_json"].replace("item17", "item18"))
    with pytest.raises(merkle.ProofError, match="does not hash"):
        proofs.check_inclusion(tampered, vkey)
    other_key = TraceLog.open(log.root + "-other", signing_key=Path(log.root + "-other.key")).verifier
    with pytest.raises(SignatureError, match="no signature by the trusted key"):
        proofs.check_inclusion(bundle, other_key)
    consistency = log.prove_consistency(50, 56)
    assert "prefix" in proofs.check_bundle(consistency, vkey)
    bad = dict(consistency, proof=list(reversed(consistency["proof"])))
    with pytest.raises(merkle.ProofError):
        proofs.check_consistency(bad, vkey)

    # The record hash is SHA-256 of RFC 8785 JSON that anyone can recompute.
    row = log.record(3)
    assert row["subject_id"] != "user3" and len(row["subject_id"]) == 32  # pseudonymised
    assert merkle.leaf_hash(bytes.fromhex(row["record_hash"])) == log._tree.leaf(3)
    d = make_decisions(1, start=3)[0]
    expected = canonical.jcs({**d.to_dict(), "subject_id": row["subject_id"], "type": "decision"})
    assert bytes.fromhex(row["record_hash"]) == __import__("hashlib").sha256(expected).digest()


def test_why_and_aggregates(log: TraceLog) -> None:
    log.append(make_decisions(60))
    log.append(make_decisions(3, start=1000, subjects=1))  # user0 again, later items
    answer = log.why("item3", "user3")
    assert answer is not None
    assert answer["action"] == "drop" and answer["rules"] == [{"id": "teen-mature-drop", "reason": "mature content is not recommended to minors"}]
    assert answer["bundle_hash"] == "ab" * 32 and answer["bundle_version"] == "2026.11.1"
    assert answer["models"] == [{"version": "ranker@3", "model": None, "training_data": [], "lineage": None,
                                 "missing": "model version: no governance registry was consulted for this answer"}]
    assert answer["breaker_state"] == "closed" and answer["index"] == 3
    assert "included" in proofs.check_bundle(answer["proof"], log.verifier)
    assert log.why("item3", "user4") is None  # another subject never saw it
    assert log.why("item3", "user3", at=1_764_000_000.0 + 2) is None  # not yet decided at that time
    assert log.why("item0", "user0")["attribution"] == {"genre": 0.5}

    by_rule = {r["rule"]: r["decisions"] for r in log.aggregate(by=["rule"])}
    assert by_rule == {"teen-mature-drop": 21, "": 42}
    by_both = log.aggregate(by=["surface", "action"], bucket="hour")
    assert sum(r["decisions"] for r in by_both) == 63 and all("bucket" in r for r in by_both)
    with pytest.raises(BadInput, match="cannot group decisions by 'colour'"):
        log.aggregate(by=["colour"])


def test_erasure_keeps_proofs_valid(log: TraceLog) -> None:
    log.append(make_decisions(70))
    before = log.prove_inclusion(10)
    result = log.erase("user3")
    assert result["erased"] == 10 and 3 in result["indices"]
    row = log.record(3)
    assert row["erased"] and all(row[c] is None for c in canonical.DECISION_SCHEMA.names)
    assert log.why("item3", "user3") is None
    report = log.verify()
    assert report.ok, report.problems
    assert report.erased == 10
    # Old proofs still check, new proofs for erased records still prove the hash is in the log.
    assert "included" in proofs.check_bundle(before, log.verifier)
    erased_proof = log.prove_inclusion(3)
    assert erased_proof.get("erased") and "record_json" not in erased_proof
    assert "included" in proofs.check_bundle(erased_proof, log.verifier)
    event = log.record(result["event_index"])
    assert event["kind"] == "trace.erasure" and json.loads(event["payload"])["count"] == 10


def test_columnar_append_and_reopen(tmp_path) -> None:
    table = canonical.decisions_to_table(make_decisions(30))
    with TraceLog.open(tmp_path / "log") as log:
        log.append_table(table)
        root = log.root_hash()
    with TraceLog.open(tmp_path / "log") as log:
        assert log.size == 30 and log.root_hash() == root and log.recovery == []
        log.append_table(table.slice(0, 5))
        assert log.verify().ok


def test_fsspec_memory_filesystem() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    with TraceLog.open("memory://assay-trace-test", segment_records=10) as log:
        log.append(make_decisions(12))
        log.append(make_decisions(3, start=12))
        assert log.verify().ok
        assert len(log.segment_names()) == 2  # one object per append on object stores
    assert fs.exists("/assay-trace-test/checkpoints")
    with TraceLog.open("memory://assay-trace-test") as log:
        assert log.size == 15 and log.verify().ok
    fs.rm("/assay-trace-test", recursive=True)


def test_bad_input_is_refused_whole(log: TraceLog) -> None:
    with pytest.raises(BadInput, match="empty"):
        log.append([])
    with pytest.raises(BadInput, match="Decision and Event"):
        log.append([*make_decisions(2), {"not": "a record"}])
    with pytest.raises(BadInput, match="required field 'item_id'"):
        log.append_table(pa.table({"request_id": ["r"], "ts": [1.0], "surface": ["s"], "subject_id": ["u"],
                                   "item_id": pa.array([None], pa.string()), "rank_before": [0], "rank_after": [0],
                                   "action": ["allow"]}))
    with pytest.raises(BadInput, match="payload must be a JSON object"):
        log.append([Event("x", 1.0, "s", payload=[1, 2])])  # type: ignore[arg-type]
    assert log.size == 0 and log.segment_names() in ([], [log.segment_names()[0]] if log.segment_names() else [])
    with pytest.raises(BadInput, match="no checkpoint"):
        log.prove_inclusion(0)


def test_partial_batch_after_crash_is_cut_and_reported(tmp_path) -> None:
    with TraceLog.open(tmp_path / "log") as log:
        log.append(make_decisions(20))
        segment = Path(log.root) / "segments" / log.segment_names()[-1]
        extra = canonical.decisions_to_table(make_decisions(5, start=20))
        rows, _ = log._decision_rows(log._prepare_decisions(extra))
        message = bytes(encode_batch(rows))
    with open(segment, "ab") as f:  # the writer died half-way through writing a batch
        f.write(message[: len(message) // 2])
    (Path(log.root) / "segments" / f"{25:020d}.arrows").write_bytes(b"\xff\xff")  # and while creating a segment
    (Path(log.root) / "segments" / f"{26:020d}.arrows").write_bytes(b"")  # (found by the SIGKILL test: an empty file)
    with TraceLog.open(tmp_path / "log", read_only=True) as reader:
        assert reader.recovery and "a writer would move it to quarantine" in reader.recovery[0]
    with TraceLog.open(tmp_path / "log") as log:
        assert len(log.recovery) == 3 and all("removed the empty segment" in m for m in log.recovery[:2])
        assert "0 records and" in log.recovery[2] and "not a complete record batch" in log.recovery[2]
        assert log.size == 21  # 20 decisions + the trace.recovered event
        recovered = log.record(20)
        assert recovered["kind"] == "trace.recovered"
        folder = json.loads(recovered["payload"])["quarantine"]
        report = json.loads((Path(log.root) / folder / "report.json").read_text())
        assert report["signed_size"] == 20 and report["records"] == 0
        assert report["torn_bytes"] == len(message) // 2  # the torn batch, moved aside byte for byte
        assert log.verify().ok


def test_checkpoints_on_demand_and_read_only(tmp_path) -> None:
    with TraceLog.open(tmp_path / "log", checkpoint_every=None) as log:
        result = log.append(make_decisions(10))
        assert result.checkpoint_size == 0 and log.checkpoint_sizes() == []
        log.append(make_decisions(5, start=10))
        checkpoint, note = log.checkpoint()
        assert checkpoint.size == 15 and note.startswith("assay.local/trace\n15\n")
        assert log.checkpoint()[0].size == 15 and log.checkpoint_sizes() == [15]
    with TraceLog.open(tmp_path / "log", read_only=True) as reader:
        for action in (lambda: reader.append(make_decisions(1)), reader.checkpoint, lambda: reader.erase("user1")):
            with pytest.raises(BadInput, match="read-only"):
                action()
        assert reader.verify().ok


def test_reader_on_another_machine_needs_the_public_key(tmp_path, monkeypatch) -> None:
    with TraceLog.open(tmp_path / "log") as log:
        log.append(make_decisions(5))
        vkey = log.verifier.vkey()
    monkeypatch.setenv("ASSAY_HOME", str(tmp_path / "auditor-home"))  # no keys here
    with pytest.raises(BadInput, match="no trace log"):
        TraceLog.open(tmp_path / "nothing", read_only=True)
    with TraceLog.open(tmp_path / "log", read_only=True) as reader:
        with pytest.raises(BadInput, match="no public key"):
            reader.verify()
        assert reader.verify(Verifier.parse(vkey)).ok
        with pytest.raises(BadInput, match="no pseudonym key"):
            reader.why("item1", "user1")
    assert not (tmp_path / "auditor-home" / "keys").exists()  # a reader created no keys


def test_a_sealed_segment_keeps_the_digest_the_writer_computed(log: TraceLog, monkeypatch) -> None:
    # When a segment rolls, its running SHA-256 goes into the next manifests: the writer never
    # reads a sealed segment back (a changed file would otherwise be signed as if it were right).
    import hashlib

    log.append(make_decisions(45))  # 40-record segments: one batch stays in one segment
    reads: list[str] = []
    original = TraceLog._read
    monkeypatch.setattr(TraceLog, "_read", lambda self, rel: reads.append(rel) or original(self, rel))
    log.append(make_decisions(3, start=45))  # seals the first segment, starts a second
    log.append(make_decisions(2, start=48))
    assert not [r for r in reads if r.startswith("segments/")]
    manifest = json.loads((Path(log.root) / "checkpoints" / f"{50:020d}.manifest.json").read_bytes())
    for entry in manifest["segments"]:
        data = (Path(log.root) / "segments" / entry["name"]).read_bytes()
        assert (entry["bytes"], entry["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert len(manifest["segments"]) == 2 and log.verify().ok


def test_an_append_torn_after_its_dictionaries_is_cut_off(tmp_path) -> None:
    # An append is its dictionary messages and then its record batch: a writer killed between the
    # two leaves complete messages that are still not a complete append.
    import pyarrow as pa

    with TraceLog.open(tmp_path / "log") as log:
        log.append(make_decisions(10))
        segment = Path(log.root) / "segments" / log.segment_names()[-1]
        rows, _ = log._decision_rows(log._prepare_decisions(canonical.decisions_to_table(make_decisions(3, start=10))))
    unit = encode_batch(rows)
    reader = pa.BufferReader(pa.py_buffer(unit))
    while pa.ipc.read_message(reader).type == "dictionary":
        dictionaries_end = reader.tell()
    good = segment.stat().st_size
    with open(segment, "ab") as f:
        f.write(bytes(unit[:dictionaries_end]))
    batches, end, trailing = read_batches(segment.read_bytes(), "s")
    assert sum(b.num_rows for b in batches) == 10 and end == good
    assert trailing and "no record batch follows its dictionaries" in trailing
    with TraceLog.open(tmp_path / "log") as log:
        assert log.size == 11 and "not a complete record batch" in log.recovery[0]
        assert log.verify().ok


def test_segments_written_before_dictionary_columns_are_still_read(tmp_path) -> None:
    # A segment with plain string columns (LEGACY_SEGMENT_SCHEMA) is read in the current schema and
    # queried; the writer does not extend it but starts a new segment.
    with TraceLog.open(tmp_path / "log") as log:
        log.append(make_decisions(6))
        name = log.segment_names()[0]
        expected = log.table().to_pylist()
        legacy = log.table().cast(canonical.LEGACY_SEGMENT_SCHEMA)
        data = canonical.LEGACY_SEGMENT_SCHEMA.serialize().to_pybytes() + b"".join(
            b.serialize().to_pybytes() for b in legacy.to_batches())
    path = tmp_path / "log" / "segments" / name
    path.write_bytes(data)
    batches, end, trailing = read_batches(data, "s")
    assert trailing is None and end == len(data) and batches[0].schema == canonical.SEGMENT_SCHEMA
    assert [row for b in batches for row in b.to_pylist()] == expected
    with TraceLog.open(tmp_path / "log") as log:
        assert log.why("item3", "user3")["index"] == 3
        log.append(make_decisions(2, start=6))
        assert len(log.segment_names()) == 2 and path.read_bytes() == data


@pytest.mark.parametrize("threads", [1, 2])
def test_writeback_is_started_for_exactly_the_bytes_appended(tmp_path, monkeypatch, threads: int) -> None:
    # Appends ask the kernel to start writing a batch out (sync_file_range) before they fsync it,
    # so the disk works while the CPU hashes; the ranges must cover the batch and nothing else.
    from assay.trace import durable as log_module
    from assay.trace.bench import synthetic_decisions
    from assay.trace.log import OVERLAP_MIN_ROWS

    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(log_module, "_SYNC_FILE_RANGE", lambda fd, offset, length, flags: calls.append((offset, length)) or 0)
    with TraceLog.open(tmp_path / "log", threads=threads) as log:
        log.append_table(synthetic_decisions(5))
        segment = Path(log.root) / "segments" / log.segment_names()[0]
        before = segment.stat().st_size
        calls.clear()
        log.append_table(synthetic_decisions(OVERLAP_MIN_ROWS + 1, start=5))
        after = segment.stat().st_size
    covered = sorted(calls)
    assert covered and covered[0][0] >= before - 1 and covered[-1][0] + covered[-1][1] == after
    assert sum(length for _, length in covered) <= after - before
