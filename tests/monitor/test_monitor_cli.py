"""``assay monitor drift|check`` and ``assay redteam filters`` through the CLI: output, exit codes,
bad input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from assay.cli.main import main

ALERTS = """\
bundle: cli-alerts
version: "1"
attributes:
  alerts:
    window.n: int
    window.drop_rate: double
alerts:
  - id: drop-surge
    when: window.n >= 10 && window.drop_rate > 0.5
    severity: page
"""


def _windows(tmp_path, shift: float):
    rng = np.random.default_rng(0)
    ref = pa.table({"score": rng.normal(0, 1, 5000), "action": rng.choice(["allow", "drop"], 5000, p=[0.9, 0.1])})
    cur = pa.table({"score": rng.normal(shift, 1, 5000), "action": rng.choice(["allow", "drop"], 5000, p=[0.9, 0.1])})
    pq.write_table(ref, tmp_path / "ref.parquet")
    pq.write_table(cur, tmp_path / "cur.parquet")


def test_drift_exit_codes_and_json(tmp_path, capsys):
    _windows(tmp_path, 0.0)
    assert main(["monitor", "drift", "-r", str(tmp_path / "ref.parquet"), "-c", str(tmp_path / "cur.parquet"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["drifted"] == [] and {f["feature"] for f in out["features"]} == {"score", "action"}
    _windows(tmp_path, 1.0)
    assert main(["monitor", "drift", "-r", str(tmp_path / "ref.parquet"), "-c", str(tmp_path / "cur.parquet"), "--json",
                 "--correction", "holm"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["drifted"] == ["score"] and out["correction"] == "holm"
    assert main(["monitor", "drift", "-r", str(tmp_path / "nope.parquet"), "-c", str(tmp_path / "cur.parquet")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["monitor", "drift", "-r", str(tmp_path / "ref.parquet"), "-c", str(tmp_path / "cur.parquet"),
                 "--column", "missing"]) == 2


def test_check_alerts_over_recorded_decisions(tmp_path, capsys):
    (tmp_path / "alerts.yaml").write_text(ALERTS)
    rows = [{"request_id": f"r{i}", "ts": 100.0 + i, "surface": "for_you", "action": "drop" if 20 <= i < 40 else "allow",
             "rule_ids": []} for i in range(60)]
    (tmp_path / "decisions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(["monitor", "check", "-b", str(tmp_path / "alerts.yaml"), "-d", str(tmp_path / "decisions.jsonl"),
                 "--window-s", "20", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [w["fired"] for w in out["windows"]] == [[], ["drop-surge"], []]
    (tmp_path / "bad.jsonl").write_text('{"action": "allow", "ts": 1}\n{oops\n')
    assert main(["monitor", "check", "-b", str(tmp_path / "alerts.yaml"), "-d", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_redteam_filters_cli(capsys):
    assert main(["redteam", "filters", "--limit", "5", "--kind", "homoglyph", "--rate", "1.0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["flagged"] == 5 and set(out["perturbations"]) == {"homoglyph"}
    assert main(["redteam", "filters", "--kind", "morse"]) == 2
    assert main(["redteam", "regress"]) == 2


def test_damaged_windows_and_decisions_are_exit_2_naming_the_file(tmp_path, capsys):
    """A probe's damaged inputs were tracebacks (exit 1): Arrow's own errors for a CSV that is
    empty or ragged, a Parquet file that is not one; JSON Lines nested 100,000 deep, an integer of
    5,000 digits, invalid UTF-8; /dev/zero was read until memory ran out."""
    (tmp_path / "alerts.yaml").write_text(ALERTS)
    (tmp_path / "ok.csv").write_text("a,b\n1,2\n3,4\n")
    damaged = {"empty.csv": b"", "ragged.csv": b"a,b\n1,2,3\n", "fake.parquet": b"not parquet at all",
               "deep.jsonl": b"[" * 100_000 + b"]" * 100_000 + b"\n"}
    for name, data in damaged.items():
        (tmp_path / name).write_bytes(data)
        assert main(["monitor", "drift", "-r", str(tmp_path / name), "-c", str(tmp_path / "ok.csv")]) == 2, name
        err = capsys.readouterr().err
        assert "Traceback" not in err and name in err and "--reference" in err, err
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    assert main(["monitor", "drift", "-r", str(tmp_path / "zero.csv"), "-c", str(tmp_path / "ok.csv")]) == 2
    assert "a device" in capsys.readouterr().err
    bad_lines = {"deep.jsonl": (b"[" * 100_000 + b"]" * 100_000 + b"\n", "deep.jsonl:1"),
                 "digits.jsonl": (b'{"action": "allow", "ts": ' + b"9" * 5000 + b"}\n", "digits.jsonl:1"),
                 "utf8.jsonl": (b'{"action": "allow"}\n{"action": "\xff"}\n', "utf8.jsonl:2:"),
                 "nan.jsonl": (b'{"action": "allow", "ts": NaN}\n', "nan.jsonl:1")}
    for name, (data, where) in bad_lines.items():
        (tmp_path / name).write_bytes(data)
        assert main(["monitor", "check", "-b", str(tmp_path / "alerts.yaml"), "-d", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert "Traceback" not in err and where in err, err
    (tmp_path / "zero.jsonl").symlink_to("/dev/zero")
    assert main(["monitor", "check", "-b", str(tmp_path / "alerts.yaml"), "-d", str(tmp_path / "zero.jsonl")]) == 2
    assert "a device" in capsys.readouterr().err


def test_check_counts_decisions_only(tmp_path, capsys):
    """Rows that are not decisions are not counted as decisions: the guard's --decisions-out file
    holds breaker events too (``kind``), which are left out as the trace reader leaves them out; any
    other row (a list, an object without an action) is refused naming it. A probe's rows of
    ``{"a": 1}`` were each counted as a decision, lowering the window's drop rate."""
    (tmp_path / "alerts.yaml").write_text(ALERTS)
    drops = [{"request_id": f"r{i}", "ts": 100.0 + i, "surface": "for_you", "action": "drop", "rule_ids": []} for i in range(10)]
    events = [{"kind": "breaker", "ts": 101.5 + i, "subject": "s", "payload": {}} for i in range(10)]
    (tmp_path / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in drops + events))
    assert main(["monitor", "check", "-b", str(tmp_path / "alerts.yaml"), "-d", str(tmp_path / "mixed.jsonl"), "--json"]) == 1
    (window,) = json.loads(capsys.readouterr().out)["windows"]
    assert window["n"] == 10 and window["drop_rate"] == 1.0 and window["fired"] == ["drop-surge"]
    for name, row, said in (("list.jsonl", [1, 2], "must be an object"), ("other.jsonl", {"a": 1}, "not a decision record"),
                            ("ts.jsonl", {"action": "drop", "ts": "soon"}, "'ts' must be a finite number")):
        (tmp_path / name).write_text(json.dumps(drops[0]) + "\n" + json.dumps(row) + "\n")
        assert main(["monitor", "check", "-b", str(tmp_path / "alerts.yaml"), "-d", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert f"{name}: row 2" in err and said in err, err
