"""No silent rollback: verify keeps a trusted state and fails on a rollback, a truncation or a
deleted checkpoint (naming the sizes); a writer signs only what it appended (anything unsigned it
finds is quarantined with a report); a crashed, not yet reopened log is an unacknowledged tail
(exit 4), not tampering; a damaged tree cache never yields a proof that fails."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from trace_helpers import make_decisions

from assay.cli.main import main
from assay.trace import EXIT_UNACKNOWLEDGED, TraceLog, canonical, proofs
from assay.trace.log import encode_batch


def _log(tmp_path: Path, batches: int = 5, **kw) -> Path:
    with TraceLog.open(tmp_path / "log", **kw) as log:
        for start in range(0, 10 * batches, 10):
            log.append(make_decisions(10, start=start))
        return Path(log.root)


def _verify(root: Path, **kw):
    with TraceLog.open(root, read_only=True) as reader:
        return reader.verify(**kw)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- verify's trusted state


def test_deleting_the_newest_checkpoints_fails_naming_the_sizes(tmp_path) -> None:
    root = _log(tmp_path)
    assert _verify(root).ok  # trusted state: size 50
    for size in (40, 50):
        (root / "checkpoints" / f"{size:020d}.note").unlink()
    report = _verify(root)
    assert not report.ok and report.trusted_size == 50
    assert any("rollback: this verifier verified the log at size 50" in p and "newest checkpoint now is of size 30" in p
               for p in report.problems), report.problems
    assert any("deleted checkpoints: the checkpoints of size 40, 50" in p for p in report.problems), report.problems
    # Without the state the same log is only an unacknowledged tail: the state is what catches it.
    fresh = _verify(root, state=False)
    assert fresh.ok and fresh.unacknowledged == {"after_size": 30, "records": 20, "torn_bytes": 0}


def test_rolling_the_whole_log_back_to_an_older_copy_fails(tmp_path) -> None:
    root = _log(tmp_path, batches=3)
    old = tmp_path / "old-copy"
    shutil.copytree(root, old)
    with TraceLog.open(root) as log:
        log.append(make_decisions(10, start=30))
    assert _verify(root).ok
    shutil.rmtree(root)
    shutil.copytree(old, root)  # every file consistent, signed, and 10 records short
    report = _verify(root)
    assert any("rollback" in p and "size 40" in p and "size 30" in p for p in report.problems), report.problems
    assert any("truncated: the segments hold 30 records, fewer than the 40" in p for p in report.problems)


def test_deleting_an_older_checkpoint_fails(tmp_path) -> None:
    root = _log(tmp_path)
    assert _verify(root).ok
    (root / "checkpoints" / f"{20:020d}.note").unlink()
    report = _verify(root)
    assert [p for p in report.problems if "deleted checkpoints" in p] == [
        next(p for p in report.problems if p.startswith("deleted checkpoints: the checkpoints of size 20 were"))]


def test_a_rewritten_history_fails_even_when_re_signed(tmp_path, monkeypatch) -> None:
    """Whoever holds the key and rewrites the log from scratch, with new records at the same
    sizes, still cannot fool a verifier that remembers the root it verified."""
    root = _log(tmp_path, batches=2)
    assert _verify(root).ok
    shutil.rmtree(root)
    state = Path(os.environ["ASSAY_HOME"]) / "state" / "trace" / "writer"
    shutil.rmtree(state)  # the forger also wipes the writer's memory
    with TraceLog.open(root) as log:
        log.append(make_decisions(10, start=100))
        log.append(make_decisions(10, start=200))
    report = _verify(root)
    assert any(p.startswith("history rewritten: the records up to 20 no longer hash to the root") for p in report.problems)


def test_the_trusted_state_is_kept_per_log_and_can_be_chosen(tmp_path, capsys) -> None:
    a = _log(tmp_path / "a", batches=2)
    b = _log(tmp_path / "b", batches=1)
    assert _verify(a).ok and _verify(b).ok  # two logs, same key and origin: two states
    state = tmp_path / "auditor.state"
    assert _run(capsys, "trace", "verify", "--path", str(a), "--state", str(state))[0] == 0
    assert json.loads(state.read_text())["note"].startswith("assay.local/trace\n20\n")
    code, _, err = _run(capsys, "trace", "verify", "--path", str(b), "--state", str(state))
    assert code == 1 and "rollback: this verifier verified the log at size 20" in err
    state.write_text(state.read_text().replace("\\n20\\n", "\\n21\\n"))
    code, _, err = _run(capsys, "trace", "verify", "--path", str(a), "--state", str(state))
    assert code == 1 and "trusted state" in err and "does not verify" in err


# ---------------------------------------------------------------- the writer


def _forge_record(root: Path, index: int) -> None:
    """Append a decision with a correct record hash to the newest segment, as an attacker would."""
    segment = sorted((root / "segments").glob("*.arrows"))[-1]
    with TraceLog.open(root, read_only=True) as reader:
        rows, hashes = reader._decision_rows(reader._prepare_decisions(canonical.decisions_to_table(
            make_decisions(1, start=index))))
    batch = rows.set_column(0, "index", pa.array([index], "uint64"))
    batch = batch.set_column(1, "record_hash", pa.array([hashes], pa.binary(32)))
    with open(segment, "ab") as f:
        f.write(bytes(encode_batch(batch)))


def test_a_writer_never_signs_records_it_did_not_append(tmp_path) -> None:
    root = _log(tmp_path, batches=3)
    notes_before = sorted(p.name for p in (root / "checkpoints").glob("*.note"))
    _forge_record(root, 30)
    with TraceLog.open(root) as log:
        assert not log.problems, log.problems
        assert log.size == 31 and log.record(30)["kind"] == "trace.recovered"  # the forgery is gone
        payload = json.loads(log.record(30)["payload"])
        report = json.loads((root / payload["quarantine"] / "report.json").read_text())
        assert report["records"] == 1 and report["signed_size"] == 30 and report["segments"][0]["first_index"] == 30
        moved = (root / payload["quarantine"] / report["segments"][0]["file"]).read_bytes()
        assert hashlib.sha256(moved).hexdigest() == report["segments"][0]["sha256"]
        assert log.verify().ok
    # Only the recovery event was signed, by this writer.
    notes_after = sorted(p.name for p in (root / "checkpoints").glob("*.note"))
    assert notes_after == [*notes_before, f"{31:020d}.note"]


def test_deleted_checkpoints_and_a_forgery_are_refused_not_signed(tmp_path) -> None:
    """The attack of the issue: delete the newest checkpoints, forge a record, open a writer."""
    root = _log(tmp_path)
    for size in (40, 50):
        (root / "checkpoints" / f"{size:020d}.note").unlink()
    _forge_record(root, 50)
    for opener in (lambda: TraceLog.open(root), lambda: TraceLog.open(root, create=False)):
        with opener() as log:
            assert any("rollback: this writer signed a checkpoint of size 50 but the newest checkpoint in the log is "
                       "of size 30" in p for p in log.problems), log.problems
            with pytest.raises(Exception, match="refusing to erase"):
                log.erase("user1")
            with pytest.raises(Exception, match="refusing to append"):
                log.append(make_decisions(1, start=51))
    assert sorted(int(p.name[:20]) for p in (root / "checkpoints").glob("*.note")) == [10, 20, 30]
    assert not (root / "quarantine").exists()  # the evidence stays where it was


def test_records_appended_between_checkpoints_are_signed_on_close(tmp_path) -> None:
    with TraceLog.open(tmp_path / "log", checkpoint_every=None) as log:
        log.append(make_decisions(10))
        assert log.checkpoint_sizes() == []
    with TraceLog.open(tmp_path / "log", read_only=True) as reader:
        assert reader.checkpoint_sizes() == [10] and reader.verify().ok


# ---------------------------------------------------------------- a crashed log


CRASH = """
import os, sys
sys.path.insert(0, {helpers!r})
from trace_helpers import make_decisions
from assay.trace import TraceLog
log = TraceLog.open({root!r}, checkpoint_every=None)
log.append(make_decisions(10))
log.checkpoint()
log.append(make_decisions(7, start=10))  # durable, never signed
os._exit(0)  # dies before close() would sign it
"""


def test_verify_on_a_crashed_log_reports_an_unacknowledged_tail(tmp_path, capsys) -> None:
    root = tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", CRASH.format(helpers=str(Path(__file__).parent), root=str(root))],
                   check=True, env=env, timeout=120)
    segment = sorted((root / "segments").glob("*.arrows"))[-1]
    with open(segment, "ab") as f:  # and a torn batch after it
        f.write(b"\xff\xff\xff\xff\x10\x00\x00\x00partial")
    code, out, err = _run(capsys, "trace", "verify", "--path", str(root), "--json")
    assert code == EXIT_UNACKNOWLEDGED == 4
    report = json.loads(out)
    assert report["ok"] and report["problems"] == []
    assert report["unacknowledged"] == {"after_size": 10, "records": 7, "torn_bytes": 15}
    assert "unacknowledged tail: 7 records and 15 bytes of a torn batch after the newest signed checkpoint (size 10)" in err
    assert "tamper" not in err.lower() and "altered" not in err
    # A writer opening it moves the tail to quarantine; then the log verifies clean.
    with TraceLog.open(root) as log:
        assert log.size == 11 and any("7 records and 15 bytes" in m for m in log.recovery)
    assert _run(capsys, "trace", "verify", "--path", str(root))[0] == 0


# ---------------------------------------------------------------- the tree cache


def test_a_damaged_tree_cache_is_detected_and_never_serves_a_bad_proof(tmp_path, capsys) -> None:
    root = _log(tmp_path)
    tree = root / "tree.bin"
    data = bytearray(tree.read_bytes())
    data[6 * 32 + 5] ^= 0xFF  # a byte of the stored root of leaves 0..3 (post-order node position 6)
    tree.write_bytes(bytes(data))
    with TraceLog.open(root, read_only=True) as reader:
        report = reader.verify(state=False)
        assert report.ok and any("tree.bin" in w and "differs from the records" in w for w in report.warnings)
        for index in (2, 3, 17, 49):  # proofs that would pass through the damaged node
            assert "included" in proofs.check_bundle(reader.prove_inclusion(index), reader.verifier)
        assert "prefix" in proofs.check_bundle(reader.prove_consistency(20, 50), reader.verifier)
    assert tree.read_bytes() == bytes(data)  # a reader does not write under a writer
    code, out, _ = _run(capsys, "trace", "prove", "--index", "3", "--path", str(root))
    assert code == 0 and "included" in proofs.check_bundle(json.loads(out), TraceLog.open(root, read_only=True).verifier)
    with TraceLog.open(root) as log:
        assert log.verify(state=False).ok
        assert "included" in proofs.check_bundle(log.prove_inclusion(3), log.verifier)
    assert tree.read_bytes() != bytes(data)  # the writer rebuilt it
    with TraceLog.open(root, read_only=True) as reader:
        assert not [w for w in reader.verify(state=False).warnings if "tree.bin" in w]
