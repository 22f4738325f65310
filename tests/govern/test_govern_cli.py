"""CLI exit codes and messages for bad input (2) and refusals (1)."""

from __future__ import annotations

import json

from assay.cli.main import main


def test_cli_bad_input_and_refusals(assay_home, tmp_path, capsys, bundle_path):
    assert main(["register", "dataset", "x", "--uri", str(tmp_path / "missing.csv"), "--purpose", "research"]) == 2
    assert "missing.csv" in capsys.readouterr().err
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    assert main(["register", "dataset", "d", "--uri", str(data), "--purpose", "Not Valid"]) == 2
    assert "not valid" in capsys.readouterr().err
    assert main(["register", "dataset", "d", "--uri", str(data), "--purpose", "research", "--region", "eu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["restrictions"] == ["region=eu"]
    assert main(["lineage", "why", "dataset:nope@3", "--purpose", "research"]) == 2
    assert "no dataset 'dataset:nope@3'" in capsys.readouterr().err
    assert main(["deploy", "check", "deployment:none@1"]) == 2
    assert main(["register", "dataset", "d2", "--uri", str(data), "--token", "assay_forged"]) == 2
    assert "unknown or revoked" in capsys.readouterr().err
    assert main(["token", "create", "--name", "v", "--role", "viewer", "--json"]) == 0
    viewer = json.loads(capsys.readouterr().out)["token"]
    assert main(["register", "dataset", "d2", "--uri", str(data), "--token", viewer]) == 1
    assert "needs role 'engineer'" in capsys.readouterr().err
    assert main(["token", "create", "--name", "v", "--role", "superuser"]) == 2
    weights = tmp_path / "m.bin"
    weights.write_bytes(b"m")
    assert main(["register", "model", "m", "--weights", str(weights), "--trained-on", "dataset:d@1", "--json"]) == 0
    model_id = json.loads(capsys.readouterr().out)["id"]
    bad_bundle = tmp_path / "bad.yaml"
    bad_bundle.write_text("bundle: x\nversion: '1'\npurposes:\n  - id: p\n    when: dataset.nope > 1\n    effect: deny\n")
    assert main(["deploy", "request", model_id, "--surface", "s", "--purpose", "research", "--bundle", str(bad_bundle)]) == 2
    assert "bad.yaml:" in capsys.readouterr().err  # the policy error names file:line:column


def test_cli_withdrawal_folders_and_cycles(assay_home, tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"w")
    (folder / "config.json").write_text("{}")
    assert main(["register", "dataset", "d", "--uri", str(data), "--purpose", "ads,research"]) == 0
    capsys.readouterr()
    assert main(["register", "model", "m", "--weights", str(folder), "--trained-on", "dataset:d@1", "--json"]) == 0
    assert [f["path"] for f in json.loads(capsys.readouterr().out)["files"]] == ["config.json", "w.bin"]
    assert main(["register", "dataset", "d", "--uri", str(data), "--purpose", "research", "--withdraw", "ads consent withdrawn"]) == 0
    assert "withdrawal binding dataset:d@1" in capsys.readouterr().out
    assert main(["lineage", "why", "model:m@1", "--purpose", "ads"]) == 1  # "no" is exit 1
    out = capsys.readouterr().out
    assert "NOT allowed" in out and "narrowed by the withdrawal dataset:d@2 (ads consent withdrawn" in out
    assert main(["lineage", "show", "--all", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["model:m@1"]["purposes"] == ["research"] and rows["dataset:d@1"]["purposes"] == ["research"]
    assert main(["register", "dataset", "e", "--uri", str(data), "--purpose", "research", "--withdraw", "x"]) == 2
    assert "no earlier version" in capsys.readouterr().err
    assert main(["lineage", "ingest", str(_events(tmp_path))]) == 2  # START then a COMPLETE that reads its output
    assert "cycle" in capsys.readouterr().err


def _events(tmp_path):
    import uuid

    run = str(uuid.uuid4())
    path = tmp_path / "events.jsonl"
    lines = []
    for event_type, ins, outs in (("START", "a", "b"), ("COMPLETE", "b", "a")):
        lines.append(json.dumps({
            "eventType": event_type, "eventTime": "2026-11-29T19:00:00Z", "producer": "https://example.com",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent", "run": {"runId": run},
            "job": {"namespace": "etl", "name": "j"}, "inputs": [{"namespace": "w", "name": ins}],
            "outputs": [{"namespace": "w", "name": outs}]}))
    path.write_text("\n".join(lines) + "\n")
    return path
