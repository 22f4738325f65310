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
