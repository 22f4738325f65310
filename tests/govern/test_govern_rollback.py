"""Rolling a deployment back is a new, audited version that copies an earlier one; the monitor's
rollback mitigation reaches it through the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.errors import BadInput
from assay.govern.gate import request_deployment, rollback_deployment
from assay.govern.registry import Actor, Forbidden, local_actor, register_dataset, register_model
from assay.store import open_store

FEED = Path(__file__).resolve().parents[2] / "src" / "assay" / "policy" / "examples" / "feed.yaml"


def test_rollback_creates_a_new_version_copying_the_earlier_one(tmp_path):
    store = open_store()
    admin = local_actor()
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    ds = register_dataset(store, admin, name="ratings", uri=str(data), purposes=["recommendation"])
    models = []
    for v in (1, 2):
        w = tmp_path / f"w{v}.txt"
        w.write_text(f"weights {v}\n")
        models.append(register_model(store, admin, name="ranker", weights=[w], trained_on=[ds["id"]]))
    engineer = Actor(name="eng", role="engineer", source="test")
    first = request_deployment(store, engineer, model=models[0]["id"], surface="for_you", purpose="recommendation", bundle=FEED, name="feed")
    second = request_deployment(store, engineer, model=models[1]["id"], surface="for_you", purpose="recommendation", bundle=FEED, name="feed")
    with pytest.raises(Forbidden):
        rollback_deployment(store, engineer, second["id"], reason="harm surge")
    from assay.cli.watch import registry_rollback

    rolled = registry_rollback()(second["id"], None, "monitor: harmful-surge")
    assert rolled["version"] == 3 and rolled["spec"]["model_id"] == models[0]["id"]
    assert rolled["spec"]["rolled_back_from"] == second["id"] and rolled["spec"]["rolled_back_to"] == first["id"]
    with pytest.raises(BadInput):
        rollback_deployment(store, admin, second["id"], to_version=7)
    with pytest.raises(BadInput):
        rollback_deployment(store, admin, first["id"], to_version=3)
