"""``assay lineage why --purpose``: "no" is exit 1, as the README's exit codes say (issue 27)."""

from __future__ import annotations

import json

from assay.cli.main import main
from assay.govern.registry import register_dataset, register_model


def test_lineage_why_exits_1_when_the_purpose_is_not_allowed(sqlite_store, engineer, files, capsys) -> None:
    data = register_dataset(sqlite_store, engineer, name="ratings", uri=str(files("r.csv", b"u,i\n1,2\n")),
                            purposes=["research"])
    model = register_model(sqlite_store, engineer, name="ranker", weights=[files("w.bin", b"w")], trained_on=[data["id"]])
    assert main(["lineage", "why", model["id"], "--purpose", "advertising"]) == 1
    out = capsys.readouterr().out
    assert "NOT allowed" in out and data["id"] in out
    assert main(["lineage", "why", model["id"], "--purpose", "advertising", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["purpose"]["allowed"] is False
    assert main(["lineage", "why", model["id"], "--purpose", "research"]) == 0
    assert "'research': allowed" in capsys.readouterr().out
    assert main(["lineage", "why", model["id"]]) == 0  # no question asked: nothing to say no to
