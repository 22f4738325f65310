"""The two-stage recommender: split, serving paths (known, cold, folded-in users), bad input,
hash-checked model files, reproducibility, evaluation, labels, reports, registration."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from assay.errors import BadInput
from assay.recsys.features import FEATURE_NAMES
from assay.recsys.model import ModelIntegrityError, Recommender, TrainConfig, train
from assay.recsys.split import temporal_split


def test_split_holds_out_each_users_latest_ratings(small_data):
    split = temporal_split(small_data.ratings)
    assert len(split.base) + len(split.valid) + len(split.test) == len(small_data.ratings)
    before = split.before_test.groupby("user_id")["ts"].max()
    after = split.test.groupby("user_id")["ts"].min()
    assert (after >= before.loc[after.index]).all()
    vmin = split.valid.groupby("user_id")["ts"].min()
    bmax = split.base.groupby("user_id")["ts"].max()
    assert (vmin >= bmax.loc[vmin.index]).all()
    with pytest.raises(BadInput, match="fractions"):
        temporal_split(small_data.ratings, test_fraction=1.5)


def test_known_user_gets_unseen_films_best_first(trained):
    rec, _split, _ = trained
    user = int(rec.state.user_ids[3])
    slate = rec.recommend(user, 10)
    assert slate.item_ids.size == 10 and not slate.cold_start
    assert np.all(np.diff(slate.scores) <= 0)
    seen = set(rec.state.item_ids[rec.state.history[rec.state.user_index(user)].indices].tolist())
    assert not seen & set(slate.item_ids.tolist())
    assert slate.frame().columns.tolist() == ["item_id", "score", *FEATURE_NAMES]


def test_cold_start_paths(trained):
    rec, _split, _ = trained
    cold = rec.recommend(987654, 5)
    assert cold.cold_start
    assert np.isnan(cold.features[:, FEATURE_NAMES.index("genre_affinity")]).all()
    assert np.isnan(cold.features[:, FEATURE_NAMES.index("retrieval_score")]).all()
    assert rec.recommend(None, 5).item_ids.tolist() == cold.item_ids.tolist()
    assert rec.recommend(history=[], k=5).cold_start
    with pytest.raises(BadInput, match="unknown user 987654"):
        rec.recommend(987654, 5, strict=True)
    folded = rec.recommend(history=[(260, 5.0), (1196, 4.5), (1210, 4.0)], k=10)
    assert not folded.cold_start
    assert not {260, 1196, 1210} & set(folded.item_ids.tolist())
    assert np.isfinite(folded.features[:, FEATURE_NAMES.index("retrieval_score")]).any()


def test_bad_requests_name_what_is_wrong(trained):
    rec, _split, _ = trained
    with pytest.raises(BadInput, match="not in the catalogue: 99999999"):
        rec.recommend(1, 5, candidates=[1, 99999999])
    with pytest.raises(BadInput, match=r"between 0\.5 and 5"):
        rec.recommend(history=[(1, 9.0)])
    with pytest.raises(BadInput, match="k must be positive"):
        rec.recommend(1, 0)
    frame = rec.recommend(1, 5).frame()
    with pytest.raises(BadInput, match="missing column\\(s\\): tag_affinity"):
        rec.score(frame.drop(columns=["score", "tag_affinity"]))
    with pytest.raises(BadInput, match="unknown column\\(s\\): score"):
        rec.score(frame)
    nan_frame = frame.drop(columns=["score"]).assign(tag_affinity=np.nan)
    assert np.isfinite(rec.score(nan_frame)).all()  # missing *values* are a defined input


def test_saved_files_are_hash_checked(trained, tmp_path):
    rec, _split, folder = trained
    loaded = Recommender.load(folder)
    user = int(rec.state.user_ids[0])
    np.testing.assert_allclose(loaded.recommend(user, 10).scores, rec.recommend(user, 10).scores)
    assert loaded.version == rec.version and len(rec.meta["files"]["ranker.txt"]) == 64
    with pytest.raises(ModelIntegrityError, match="registry"):
        Recommender.load(folder, expected={"ranker.txt": "0" * 64})
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    text = (copy / "ranker.txt").read_text()
    (copy / "ranker.txt").write_text(text.replace("shrinkage=", "shrinkage= ", 1))
    with pytest.raises(ModelIntegrityError, match=r"ranker\.txt has sha256"):
        Recommender.load(copy)
    with pytest.raises(BadInput, match="no trained recommender"):
        Recommender.load(tmp_path / "nothing")


def test_same_seed_same_files(small_data, tmp_path):
    data = small_data.slice_users(30)
    config = replace(TrainConfig(), rounds=15, factors=8, als_iterations=4)
    a, _ = train(data, config)
    b, _ = train(data, config)
    fa, fb = a.save(tmp_path / "a"), b.save(tmp_path / "b")
    assert a.meta["files"] == b.meta["files"]
    assert (fa / "ranker.txt").read_bytes() == (fb / "ranker.txt").read_bytes()
    c, _ = train(data, replace(config, seed=7))
    c.save(tmp_path / "c")
    assert c.meta["files"]["ranker.txt"] != a.meta["files"]["ranker.txt"]


def test_offline_evaluation_and_audit_report(trained, tmp_path):
    from assay.recsys.audit import write_audit
    from assay.recsys.evaluation import evaluate

    rec, split, _ = trained
    ev = evaluate(rec, split.test, k=10, resamples=50)
    for system in ("ranker", "retrieval", "popularity"):
        m = ev.metrics[system]["ndcg"]
        assert 0 <= m["ci_low"] <= m["value"] <= m["ci_high"] <= 1
        assert m["n"] > 40
    shares = ev.exposure_popularity["exposure_share"].sum()
    assert shares == pytest.approx(1.0, abs=1e-9)
    assert {"gini", "aplt", "coverage"} <= set(ev.beyond)
    assert {"mean[active]", "mean[light]", "gap"} <= set(ev.user_groups)
    result = ev.result(rec, {"ranker.txt": rec.meta["files"]["ranker.txt"]})
    assert result.metrics["ndcg@10"] == pytest.approx(ev.metrics["ranker"]["ndcg"]["value"])
    out = write_audit(rec, ev, tmp_path / "audit.html")
    html = out.read_text()
    for heading in ("Accuracy", "Fairness: items", "Fairness: users", "Robustness", "Provenance"):
        assert f"<h2>{heading}</h2>" in html
    assert html.count("data:image/png;base64,") >= 4
    assert "No red-team results" in html
    from assay.runlog import read_runlog

    log = read_runlog(tmp_path / "audit.runlog.jsonl")  # the audit's record, beside its HTML
    assert (log.kind, log.header.model.name, log.summary.artifacts["report"]) == ("recommender-audit", str(rec.version), "audit.html")
    assert log.summary.metrics["ndcg@10"].value == pytest.approx(ev.metrics["ranker"]["ndcg"]["value"])
    assert log.summary.metrics["ndcg@10[popularity]"].n == ev.metrics["popularity"]["ndcg"]["n"] and "gini" in log.summary.metrics
    redteam = tmp_path / "redteam.json"
    redteam.write_text(
        '{"suite": "redteam-shilling", "target": "x", "metrics": {"attack_success_rate": 0.25}, "intervals": {"attack_success_rate": [0.2, 0.3]}}'
    )
    assert "attack_success_rate" in write_audit(rec, ev, tmp_path / "a2.html", redteam).read_text()
    shilling = {"attack": {"kind": "average", "attack_size": 0.03}, "targets": [1, 2], "k": 10, "users_measured": 50,
                "clean": {"prediction_shift": 0.0, "hit_ratio": 0.01}, "attacked": {"prediction_shift": 0.31, "hit_ratio": 0.4},
                "mitigated": {"prediction_shift": 0.02, "hit_ratio": 0.02}, "detectors": [{"name": "rdma", "auroc": 0.93}]}  # fmt: skip
    redteam.write_text(json.dumps(shilling))
    html_text = write_audit(rec, ev, tmp_path / "a4.html", redteam).read_text()
    assert (
        "Shilling attack <b>average</b> (attack_size 0.03)" in html_text
        and "attacked" in html_text
        and "rdma" in html_text
    )
    redteam.write_text("{not json")
    with pytest.raises(BadInput, match="cannot read red-team results"):
        write_audit(rec, ev, tmp_path / "a3.html", redteam)


def test_safety_labels_from_metadata(small_data, tmp_path):
    from assay.recsys.labels import LABELS, safety_labels, write_labels
    from assay.store.labels import InMemoryLabelStore

    labels = safety_labels(small_data)
    assert len(labels) == len(small_data.movies)
    values = labels[list(LABELS)].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    by_id = labels.set_index("item_id")
    toy_story, horror = (
        by_id.loc["1"],
        labels[small_data.movies["genres"].map(lambda g: "Horror" in g).to_numpy()],
    )
    assert toy_story["mature"] == 0.0
    assert (horror["horror"] >= 0.9).all() and (horror["mature"] >= 0.55).all()
    path = write_labels(labels, tmp_path / "labels.parquet")
    store = InMemoryLabelStore.from_parquet(path)
    batch = store.get(["1", horror["item_id"].iloc[0]], ["mature"])
    assert batch.values["mature"][0] == 0.0 and batch.values["mature"][1] >= 0.55
    with pytest.raises(BadInput, match="in \\[0, 1\\]"):
        write_labels(labels.assign(mature=2.0), tmp_path / "bad.parquet")


def test_registration_with_lineage_and_registry_hash_check(
    trained, tmp_path, monkeypatch, assay_home
):
    from assay.recsys import pipeline
    from assay.recsys.evaluation import evaluate
    from assay.recsys.governance import register, registered_hashes

    rec, split, folder = trained
    served = pipeline.model_folder()
    served.mkdir(parents=True)
    for f in folder.iterdir():
        (served / f.name).write_bytes(f.read_bytes())
    ev = evaluate(rec, split.test, resamples=20, max_users=20)
    ids = register(rec, served, evaluation=ev)
    assert ids["model"].startswith("model:movielens-ref@") and ids["evaluation"]
    assert registered_hashes() == rec.meta["files"]
    assert register(rec, served)["model"] == ids["model"]  # same content: reused, no new version
    assert pipeline.load_served().version == rec.version
    # a consistent swap (file + model.json rewritten together) is still refused: the registry disagrees
    other, _ = train(
        pipeline.load_dataset("ml-latest-small", 30),
        replace(TrainConfig(), rounds=10, factors=8, als_iterations=3),
    )
    other.save(served)
    with pytest.raises(ModelIntegrityError, match="registry"):
        pipeline.load_served()


def test_cli_train_recommend_and_refusal(assay_home, monkeypatch):
    from assay.cli.main import main

    assert main(["recsys", "train", "--users", "40", "--rounds", "10", "--no-register"]) == 0
    assert main(["recsys", "recommend", "1", "--k", "3", "--json"]) == 0
    assert main(["recsys", "recommend", "424242", "--strict"]) == 2
    assert main(["recsys", "recommend", "--history", "260:x"]) == 2
    ranker = assay_home / "recsys" / "movielens-ref" / "ranker.txt"
    ranker.write_text(ranker.read_text() + "\n")
    assert main(["recsys", "recommend", "1"]) == 1
    assert main(["recsys", "labels"]) == 0
    assert (assay_home / "labels" / "movielens.parquet").is_file()
