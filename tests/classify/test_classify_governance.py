"""``assay classify train`` registers what it trained -- a response head or a pair head -- in the
governance registry (a fresh SQLite store under the test's own ASSAY_HOME): the source dataset,
the head's files by sha256 with the training run from that dataset, and the test evaluation;
training again with the same seed reuses them; ``--no-register`` registers nothing."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from assay.cli.main import main


def _store():
    from assay.store import open_store

    return open_store()


def test_train_registers_datasets_head_and_evaluation_with_lineage(tmp_path):
    from assay.govern.registry import ancestry_edges, asset_view, resolve, sha256_file
    from assay.store.schema import Asset

    out = tmp_path / "heads"
    assert main(["classify", "train", "refusal", "--limit", "24", "--out-dir", str(out)]) == 0
    doc = json.loads((out / "refusal.metrics.json").read_text())
    store = _store()
    with store.session() as s:
        model = asset_view(s, resolve(s, "model:classifier-refusal"))
        assert {f["path"]: f["sha256"] for f in model["files"]} == {
            "refusal.npz": sha256_file(out / "refusal.npz"),
            "refusal.json": sha256_file(out / "refusal.json"),
        }
        dataset = asset_view(s, resolve(s, "dataset:do_not_answer"))
        assert "non_commercial" in dataset["restrictions"]
        edges = ancestry_edges(s, [model["id"]])
        assert (dataset["id"], model["id"]) in {(a, b) for a, b, _ in edges}
        evaluations = s.scalars(sa.select(Asset).where(Asset.kind == "evaluation", Asset.subject_id == model["id"])).all()
        assert len(evaluations) == 1
        result = evaluations[0].spec["result"]
        assert result["target"] == doc["version"]
        assert result["metrics"]["auroc"] == doc["test"]["model"]["auroc"]["value"]
        assert result["intervals"]["f1"] == doc["test"]["model"]["f1"]["ci95"]
        assert "auroc_above:refusal-prefix" in result["gate_verdicts"]
        first_ids = (model["id"], dataset["id"], evaluations[0].id)

    # Same seed, same data: the same bytes, so nothing new is registered.
    assert main(["classify", "train", "refusal", "--limit", "24", "--out-dir", str(out)]) == 0
    with store.session() as s:
        assert resolve(s, "model:classifier-refusal").id == first_ids[0]
        assert resolve(s, "dataset:do_not_answer").id == first_ids[1]
        assert len(s.scalars(sa.select(Asset).where(Asset.kind == "evaluation")).all()) == 1

    # Different training data (a larger slice): a new model version, lineage to the same dataset.
    assert main(["classify", "train", "refusal", "--limit", "30", "--out-dir", str(out)]) == 0
    with store.session() as s:
        newer = resolve(s, "model:classifier-refusal")
        assert newer.id != first_ids[0] and newer.version == 2
        assert resolve(s, "dataset:do_not_answer").id == first_ids[1]
        assert first_ids[1] in {a for a, _, _ in ancestry_edges(s, [newer.id])}


def test_pair_head_registers_with_the_same_lineage(tmp_path):
    """A pair head goes through the same ``governance.register``: source dataset, its two files by
    sha256, its test evaluation with intervals; training it again with the same seed and data
    writes the same bytes and registers nothing new."""
    from assay.govern.registry import ancestry_edges, asset_view, resolve, sha256_file
    from assay.store.schema import Asset

    out = tmp_path / "heads"
    assert main(["classify", "train", "refusal_pair", "--limit", "24", "--out-dir", str(out)]) == 0
    doc = json.loads((out / "refusal_pair.json").read_text())
    store = _store()
    with store.session() as s:
        model = asset_view(s, resolve(s, "model:classifier-refusal_pair"))
        assert {f["path"]: f["sha256"] for f in model["files"]} == {
            "refusal_pair.npz": sha256_file(out / "refusal_pair.npz"),
            "refusal_pair.json": sha256_file(out / "refusal_pair.json"),
        }
        dataset = asset_view(s, resolve(s, "dataset:do_not_answer"))
        assert (dataset["id"], model["id"]) in {(a, b) for a, b, _ in ancestry_edges(s, [model["id"]])}
        evaluations = s.scalars(sa.select(Asset).where(Asset.kind == "evaluation", Asset.subject_id == model["id"])).all()
        assert len(evaluations) == 1
        result = evaluations[0].spec["result"]
        assert result["target"] == doc["version"] == f"refusal_pair@sha256:{doc['weights_sha256']}"
        assert result["suite"] == "classify-refusal_pair" and result["run_id"].endswith("-limit24")
        assert result["metrics"]["f1"] == doc["test"]["model"]["f1"]["value"]
        assert result["intervals"]["f1"] == doc["test"]["model"]["f1"]["ci95"]
        assert result["n"]["f1"] == doc["split"]["test"]["n"]
        first = (model["id"], evaluations[0].id, sha256_file(out / "refusal_pair.json"))

    assert main(["classify", "train", "refusal_pair", "--limit", "24", "--out-dir", str(out)]) == 0
    assert sha256_file(out / "refusal_pair.json") == first[2]
    with store.session() as s:
        assert resolve(s, "model:classifier-refusal_pair").id == first[0]
        assert [e.id for e in s.scalars(sa.select(Asset).where(Asset.kind == "evaluation")).all()] == [first[1]]
        assert len(s.scalars(sa.select(Asset).where(Asset.kind == "model")).all()) == 1


@pytest.mark.parametrize("name", ["refusal", "refusal_pair"])
def test_no_register_leaves_the_registry_empty(tmp_path, name):
    from assay.store.schema import Asset

    out = tmp_path / "heads"
    assert main(["classify", "train", name, "--limit", "24", "--out-dir", str(out), "--no-register"]) == 0
    with _store().session() as s:
        assert s.scalars(sa.select(Asset)).all() == []


def test_head_files_are_byte_reproducible(tmp_path):
    import numpy as np

    from assay.classify.train import save_npz

    arrays = {"b": np.arange(3, dtype=np.float32), "a": np.eye(2)}
    save_npz(tmp_path / "x.npz", arrays)
    first = (tmp_path / "x.npz").read_bytes()
    save_npz(tmp_path / "x.npz", arrays)
    assert (tmp_path / "x.npz").read_bytes() == first
    with np.load(tmp_path / "x.npz", allow_pickle=False) as npz:
        assert np.array_equal(npz["a"], arrays["a"]) and np.array_equal(npz["b"], arrays["b"])
