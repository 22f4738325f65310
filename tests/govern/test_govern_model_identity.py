"""One identity for a model version everywhere (issue 27, item 3): the ``name@<weights hash>`` a
decision records resolves in the registry, and ``model_link`` follows it to the training data or
names the missing link."""

from __future__ import annotations

import hashlib

import pytest

from assay.cli.main import main
from assay.govern.lineage import model_link, show
from assay.govern.registry import Conflict, NotFound, register_dataset, register_model


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def ranker(store, engineer, files):
    data = register_dataset(store, engineer, name="ratings", uri=str(files("ratings.csv", b"u,i,r\n1,2,5\n")),
                            purposes=["recommendation"])
    weights = files("ranker.txt", b"tree 1\n")
    model = register_model(store, engineer, name="ranker", weights=[weights], trained_on=[data["id"]])
    return data, model, _sha(b"tree 1\n")


def test_name_at_weights_hash_resolves_to_the_registered_version(store, ranker) -> None:
    data, model, weights_sha = ranker
    for ref in (f"ranker@{weights_sha[:12]}", f"ranker@{weights_sha}", f"ranker@{model['content_hash'][:12]}",
                f"model:ranker@{weights_sha[:12].upper()}", "ranker@1", model["id"]):
        assert show(store, ref)["asset"]["id"] == model["id"], ref
    link = model_link(store, f"ranker@{weights_sha[:12]}")
    assert link["model"] == model["id"] and link["training_data"] == [data["id"]] and link["missing"] is None


def test_a_hash_of_other_weights_names_the_missing_link(store, ranker) -> None:
    link = model_link(store, "ranker@" + "0" * 12)
    assert link["model"] is None and link["lineage"] is None
    assert link["missing"].startswith("model version:") and "model:ranker@1" in link["missing"], link["missing"]
    with pytest.raises(NotFound, match="neither a version number nor a prefix"):
        show(store, "ranker@" + "0" * 12)
    with pytest.raises(NotFound, match="nothing is registered under the name 'nothing'"):
        show(store, "nothing@abcdef012345", kind="model")
    with pytest.raises(NotFound):  # too short to be a hash prefix, and no version 7
        show(store, "ranker@7")


def test_a_model_without_training_data_says_so(store, engineer, files) -> None:
    model = register_model(store, engineer, name="orphan", weights=[files("w.bin", b"w")])
    link = model_link(store, f"orphan@{_sha(b'w')[:12]}")
    assert link["model"] == model["id"] and link["training_data"] == []
    assert link["missing"].startswith("training data:") and model["id"] in link["missing"]


def test_a_prefix_two_versions_share_is_refused_not_guessed(store, engineer, files) -> None:
    trees = _sha(b"same trees")
    register_model(store, engineer, name="twin", files=[{"path": "ranker.txt", "sha256": trees, "size": 1}], uri="/models/twin")
    register_model(store, engineer, name="twin", files=[{"path": "ranker.txt", "sha256": trees, "size": 1},
                                                         {"path": "als.npz", "sha256": "1" * 64, "size": 1}], uri="/models/twin")
    with pytest.raises(Conflict, match=r"ambiguous.*model:twin@1, model:twin@2"):
        show(store, f"twin@{trees[:12]}")
    assert show(store, "twin@2")["asset"]["id"] == "model:twin@2"


def test_lineage_show_takes_the_recorded_identity(sqlite_store, engineer, files, capsys) -> None:
    data = register_dataset(sqlite_store, engineer, name="ratings", uri=str(files("r.csv", b"u,i\n1,2\n")),
                            purposes=["recommendation"])
    register_model(sqlite_store, engineer, name="movielens-ref", weights=[files("ranker.txt", b"trees")],
                   trained_on=[data["id"]])
    assert main(["lineage", "show", f"movielens-ref@{_sha(b'trees')[:12]}", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"model:movielens-ref@1"' in out and data["id"] in out
    assert main(["lineage", "show", "movielens-ref@" + "f" * 12]) == 2
