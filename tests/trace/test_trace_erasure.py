"""Erasure erases: after ``erase``, no byte of any file under the log holds an erased value, every
other record's proof still checks, and the erasure is a signed event."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path

import pytest
from trace_helpers import make_decisions

from assay.trace import TraceLog, canonical, proofs
from assay.trace.log import PENDING_ERASURE

SUBJECT = "erase-me@example.org"


def _marked(decisions: list, every: int = 5) -> list:
    """Every ``every``-th decision is the subject's, with values found nowhere else (so a byte
    search for them means something): ids, rule and reason, model, scores, ranks, time, attribution."""
    out = []
    for i, d in enumerate(decisions):
        if i % every == 0:
            d = dataclasses.replace(
                d, subject_id=SUBJECT, request_id=f"req-secret-{i:04d}", item_id=f"item-secret-{i:04d}",
                rule_ids=(f"rule-secret-{i:04d}",), reasons=(f"reason-secret-{i:04d}",),
                model_versions=(f"model-secret-{i:04d}",), bundle_version=f"bundle-secret-{i:04d}",
                rank_before=700_000_000 + i, rank_after=800_000_000 + i, ts=1_777_777_777.125 + i,
                score_before=0.123456789 + i, score_after=0.987654321 + i, surface=f"surface-secret-{i:04d}",
                attribution={f"signal-secret-{i:04d}": 0.5})
        out.append(d)
    return out


def _erased_values(decisions: list) -> dict[str, bytes]:
    """The byte patterns of everything the subject's records held, as Arrow stores them."""
    values: dict[str, bytes] = {}
    for d in decisions:
        if d.subject_id != SUBJECT:
            continue
        for name in ("request_id", "item_id", "surface", "bundle_version"):
            values[f"{d.request_id} {name}"] = getattr(d, name).encode()
        for name in ("rule_ids", "reasons", "model_versions"):
            values[f"{d.request_id} {name}"] = getattr(d, name)[0].encode()
        values[f"{d.request_id} attribution"] = canonical.jcs(d.attribution)
        for name in ("rank_before", "rank_after"):
            values[f"{d.request_id} {name}"] = struct.pack("<q", getattr(d, name))
        for name in ("ts", "score_before", "score_after"):
            values[f"{d.request_id} {name}"] = struct.pack("<d", getattr(d, name))
    return values


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _grep(root: Path, values: dict[str, bytes]) -> list[str]:
    return [f"{what} in {name}" for name, data in _all_files(root).items() for what, value in values.items() if value in data]


def test_erased_values_are_in_no_file_under_the_log(tmp_path) -> None:
    decisions = _marked(make_decisions(120))
    with TraceLog.open(tmp_path / "log", segment_records=50) as log:
        for start in range(0, 120, 20):
            log.append(decisions[start:start + 20])
        pseudonym = log.pseudonymiser.one(SUBJECT)
        log.why("item-secret-0005", SUBJECT)  # builds and persists the item index of every segment
        others = [i for i in range(120) if i % 5]
        before = {i: log.prove_inclusion(i) for i in others[:10]}
        values = {**_erased_values(decisions), "pseudonym": pseudonym.encode()}
        root = Path(log.root)
        assert _grep(root, values), "the test's values must be on disk before the erasure"
        assert list((root / "index").glob("*.npz"))

        result = log.erase(SUBJECT, reason="GDPR art. 17 request 42")

        assert result["erased"] == 24 and result["indices"] == list(range(0, 120, 5))
        assert result["files_rewritten"] == 2  # both segments (0-59, 60-119)
        assert _grep(root, values) == []
        assert not list(root.rglob("*.tmp")) and not (root / PENDING_ERASURE).exists()

        # What an erased record keeps: index, record hash, type, the erased flag.
        row = log.record(5)
        assert row["erased"] and row["type"] == "decision" and len(row["record_hash"]) == 64
        assert all(row[name] is None for name in canonical.DECISION_SCHEMA.names)
        # Every other record: its old proof and a new one still check; erased ones prove their hash.
        for bundle in before.values():
            assert "included" in proofs.check_bundle(bundle, log.verifier)
        for i in others:
            assert "included" in proofs.check_bundle(log.prove_inclusion(i), log.verifier)
        erased_proof = log.prove_inclusion(5)
        assert erased_proof["erased"] and "record_json" not in erased_proof
        assert "included" in proofs.check_bundle(erased_proof, log.verifier)
        # The erasure is a signed event: in the log, covered by a checkpoint, naming no one.
        event = log.record(result["event_index"])
        assert event["kind"] == "trace.erasure" and event["event_subject"] == ""
        payload = json.loads(event["payload"])
        assert payload == {"count": 24, "indices": result["indices"], "reason": "GDPR art. 17 request 42"}
        assert log.checkpoint_sizes()[-1] == log.size == result["event_index"] + 1
        assert "included" in proofs.check_bundle(log.prove_inclusion(result["event_index"]), log.verifier)
        report = log.verify()
        assert report.ok and report.erased == 24, report.problems
        # Queries no longer see them; the others still answer.
        assert log.why("item-secret-0005", SUBJECT) is None
        assert log.why("item1", "user1")["index"] == 1
        assert sum(g["decisions"] for g in log.aggregate(["action"])) == 96


def test_erasure_reaches_quarantined_tails(tmp_path) -> None:
    """Unsigned records moved to quarantine/ are files under the log too: erased as well."""
    decisions = _marked(make_decisions(40))
    with TraceLog.open(tmp_path / "log", checkpoint_every=None) as log:
        log.append(decisions[:20])
        log.checkpoint()
        log.append(decisions[20:])  # durable, never signed
        root = Path(log.root)
        log._file_lock.close()  # the process "dies": no close(), no checkpoint
        log._file_lock = None
        log._closed = True
    with TraceLog.open(root) as log:
        assert log.size == 21 and any("moved to quarantine" in m for m in log.recovery)
        values = _erased_values(decisions[20:])
        assert [h for h in _grep(root, values) if h.split(" in ")[1].startswith("quarantine")]
        result = log.erase(SUBJECT)
        assert result["erased"] == 4  # the signed ones; the quarantined ones are rewritten too
        assert _grep(root, {**_erased_values(decisions), "pseudonym": log.pseudonymiser.one(SUBJECT).encode()}) == []
        assert log.verify().ok


def test_an_erasure_interrupted_by_a_crash_is_finished_by_the_next_writer(tmp_path, monkeypatch) -> None:
    decisions = _marked(make_decisions(60))
    with TraceLog.open(tmp_path / "log", segment_records=20) as log:
        log.append(decisions)
        root = Path(log.root)
        real = TraceLog._write_atomic
        calls = []

        def crash_after_first_segment(self, rel, data, durable=True):
            real(self, rel, data, durable)
            calls.append(rel)
            if rel.startswith("segments/"):
                raise KeyboardInterrupt("killed")  # the process dies after one rewritten segment

        monkeypatch.setattr(TraceLog, "_write_atomic", crash_after_first_segment)
        with pytest.raises(KeyboardInterrupt):
            log.erase(SUBJECT)
        monkeypatch.setattr(TraceLog, "_write_atomic", real)
        assert (root / PENDING_ERASURE).exists() and calls[0] == PENDING_ERASURE
        log._closed = True
    with TraceLog.open(root, read_only=True) as reader:
        report = reader.verify(state=False)
        assert not report.ok and any("an erasure was interrupted" in p for p in report.problems)
    with TraceLog.open(root, segment_records=20) as log:
        assert any("finished an erasure interrupted by a crash (12 records" in m for m in log.recovery)
        assert not (root / PENDING_ERASURE).exists()
        assert _grep(root, _erased_values(decisions)) == []
        kinds = [log.record(i)["kind"] for i in range(60, log.size)]
        assert kinds.count("trace.erasure") == 1
        assert log.verify().ok


def test_erase_needs_an_existing_log(tmp_path) -> None:
    from assay.errors import BadInput

    with pytest.raises(BadInput, match="there is no trace log"):
        TraceLog.open(tmp_path / "typo", create=False)
    assert not (tmp_path / "typo").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput, match="is a file, not a trace log folder"):
        TraceLog.open(tmp_path / "file")
    assert os.path.isfile(tmp_path / "file")
