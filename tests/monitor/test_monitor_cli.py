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
