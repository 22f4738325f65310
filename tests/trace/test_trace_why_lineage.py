"""``assay trace why`` follows each recorded model version to the registry, and when a link is
missing it says which one and why, in JSON and in text (issue 27, item 3)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from trace_helpers import make_decisions

from assay.cli.main import main
from assay.trace import TraceLog


def _why(capsys, *extra: str) -> str:
    capsys.readouterr()
    assert main(["trace", "why", "--item", "item1", "--subject", "user1", *extra]) == 0
    return capsys.readouterr().out


def test_an_unregistered_model_version_is_named_as_the_missing_link(capsys) -> None:
    with TraceLog.open() as log:
        log.append(make_decisions(4))  # decisions record ranker@3, which nothing registered
    (model,) = json.loads(_why(capsys, "--json"))["models"]
    assert model["version"] == "ranker@3" and model["model"] is None and model["lineage"] is None
    assert model["missing"].startswith("model version: 'ranker@3' does not resolve in the registry"), model
    assert "lineage incomplete: model version: 'ranker@3'" in _why(capsys)


def test_a_registered_model_without_training_data_names_that_link(capsys) -> None:
    from assay.govern.registry import local_actor, register_model
    from assay.store import open_store

    store = open_store()
    weights = hashlib.sha256(b"trees").hexdigest()
    register_model(store, local_actor(), name="ranker", files=[{"path": "ranker.txt", "sha256": weights, "size": 5}],
                   uri="/models/ranker")
    store.close()
    with TraceLog.open() as log:
        log.append([replace(d, model_versions=(f"ranker@{weights[:12]}",)) for d in make_decisions(4)])
    (model,) = json.loads(_why(capsys, "--json"))["models"]
    assert model["model"] == "model:ranker@1" and model["training_data"] == []
    assert model["missing"].startswith("training data: model:ranker@1 has no training run"), model
    text = _why(capsys)
    assert f"model ranker@{weights[:12]} = model:ranker@1" in text and "lineage incomplete: training data" in text
