"""Registry side of a mitigation, on the real registry (SQLite under the test's ASSAY_HOME):
restrictions of the mitigation data propagate to the fine-tuned model, the evaluation is
recorded against the exact weights, and the deployment gate decides with the bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from assay.errors import BadInput
from assay.mitigate import lineage
from assay.mitigate.model import resolve_model
from assay.mitigate.pipeline import RunSpec, build_data
from assay.mitigate.reeval import DEFAULT_POLICY


def _weights_dir(path, seed: int):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"w": np.random.default_rng(seed).standard_normal((4, 4)).astype(np.float32)}, str(path / "model.safetensors"))
    return path


@pytest.fixture
def mitigation(findings_file, tmp_path):
    data_dir = tmp_path / "run" / "data"
    manifest = build_data(RunSpec(findings=[str(findings_file)], augment_harmful=20, eval_harmful=10, eval_benign=10), data_dir)
    base = resolve_model(str(_weights_dir(tmp_path / "base", 1)))
    merged = _weights_dir(tmp_path / "run" / "merged", 2)
    return data_dir, manifest, base, merged


def test_research_only_data_makes_a_research_only_model(mitigation):
    data_dir, manifest, base, merged = mitigation
    base_id = lineage.check_base_registration(base, purposes=["research", "safety_finetuning", "chat"])
    # A second look finds the same registration (hashes match).
    assert lineage.check_base_registration(base) == base_id
    reg = lineage.register_mitigation(
        run_id="t1", base_id=base_id, data_dir=data_dir, manifest=manifest, merged_dir=merged,
        model_name="tiny-mitigated", restrictions=["research_only"],
    )
    assert set(reg["effective"]["restrictions"]) >= {"research_only", "non_commercial"}
    assert set(reg["effective"]["purposes"]) <= {"research", "safety_finetuning"}
    assert "dataset:do_not_answer@1" in reg["sources"]

    # the gates weigh evidence: each metric travels with its n and 95% interval
    metrics = {"harmful_rate_reduction": 0.3, "benign_helpful_drop": 0.0}
    common = dict(
        run_id="t1", model_id=reg["model"], model_hashes=reg["model_files"],
        dataset_name=reg["dataset"].split(":", 1)[1].rsplit("@", 1)[0], dataset_hash=reg["dataset_hash"],
        metrics=metrics, intervals={"harmful_rate_reduction": (0.24, 0.36), "benign_helpful_drop": (-0.03, 0.03)},
        n={"harmful_rate_reduction": 400, "benign_helpful_drop": 400}, gate_verdicts={}, bundle_path=DEFAULT_POLICY,
        purpose="research", environment="staging",
    )
    on_chat = lineage.register_evaluation_and_submit(surface="chat", **common)["verdict"]
    assert not on_chat["allowed"]
    denial = next(d for d in on_chat["denials"] if d["rule"] == "research-only-stays-in-research")
    assert any("mitigation-data-t1" in step for step in denial["path"])  # the path names the data
    on_research = lineage.register_evaluation_and_submit(surface="research", **{**common, "run_id": "t2"})["verdict"]
    assert {v["id"]: v["passed"] for v in on_research["checks"]["gates"]["verdicts"]} == {
        "mitigation-harmful-rate-falls": True,
        "mitigation-benign-helpful-holds": True,
    }
    assert on_research["checks"]["purposes"]["allowed"]
    # Only the missing approval stands between this model and a research deployment.
    assert {d["rule"] for d in on_research["denials"]} == {"assay:approvals"}


def test_base_hash_mismatch_names_both_hashes(mitigation, tmp_path):
    _, _, base, _ = mitigation
    base_id = lineage.check_base_registration(base)
    (base.path / "model.safetensors").write_bytes(b"changed after registration")
    with pytest.raises(BadInput, match="hash mismatch") as e:
        lineage.check_base_registration(resolve_model(str(base.path)))
    assert base_id in str(e.value)
