"""Conformance: assay's recommender metrics against pytrec_eval (trec_eval's own C code) and ranx,
run side by side on random cases (graded relevance, tied scores, users with no relevant item,
users missing from the run, runs shorter than k, long lists), under each peer's conventions.
Every disagreement is reported by name (metric, user, both values), not as a drifting mean."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytrec_eval  # the dev extra (make test installs it): trec_eval's own C code
import ranx

from assay.errors import BadInput
from assay.evaluate import recsys_metrics as rm

CASES = 60


def _case(rng: np.random.Generator, ties: bool) -> tuple[dict, dict]:
    """qrels {user: {item: grade}} and run {user: {item: score}} with the awkward parts in."""
    n_users = int(rng.integers(1, 12))
    n_items = int(rng.choice([5, 30, 400]))
    items = [f"d{j:04d}" for j in range(n_items)]
    qrels: dict = {}
    run: dict = {}
    for u in range(n_users):
        user = f"u{u:02d}"
        kind = rng.random()
        judged = rng.choice(n_items, size=int(rng.integers(1, min(n_items, 40) + 1)), replace=False)
        grades = rng.integers(0, 4, judged.size)
        if kind < 0.15:
            grades[:] = 0  # judged, nothing relevant
        if kind > 0.1:  # some users are in the run only
            qrels[user] = {items[j]: int(g) for j, g in zip(judged, grades, strict=True)}
        if 0.05 < kind < 0.92:  # some users have relevance but no run
            length = int(rng.integers(1, n_items + 1))
            chosen = rng.choice(n_items, size=length, replace=False)
            scores = rng.integers(0, 5, length).astype(float) if ties else rng.permutation(length).astype(float) + rng.random()
            run[user] = {items[j]: float(s) for j, s in zip(chosen, scores, strict=True)}
    return qrels, run


def _write(tmp_path, qrels: dict, run: dict) -> tuple:
    q = tmp_path / "qrels"
    r = tmp_path / "run"
    q.write_text("".join(f"{u} 0 {d} {g}\n" for u, docs in qrels.items() for d, g in docs.items()))
    r.write_text("".join(f"{u} Q0 {d} {i} {s!r} tag\n" for u, docs in run.items() for i, (d, s) in enumerate(docs.items())))
    return q, r


# assay metric (k) -> trec_eval measure
TREC_MEASURES = {
    ("ndcg", None): "ndcg", ("ndcg", 10): "ndcg_cut_10", ("map", None): "map", ("map", 10): "map_cut_10",
    ("precision", 5): "P_5", ("precision", 10): "P_10", ("recall", 10): "recall_10", ("mrr", None): "recip_rank",
    ("rprec", None): "Rprec", ("hit_rate", 10): "success_10",
}


def _differences(ours: dict, theirs: dict, label: str) -> list[str]:
    out = []
    for user in sorted(set(ours) | set(theirs)):
        a, b = ours.get(user), theirs.get(user)
        if a is None or b is None or not math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12):
            out.append(f"{label} user {user}: assay {a} vs peer {b}")
    return out


@pytest.mark.parametrize("ties", [False, True])
def test_equal_to_trec_eval_under_its_conventions(tmp_path, ties):
    rng = np.random.default_rng(23 + ties)
    differences: list[str] = []
    for case in range(CASES):
        qrels, run = _case(rng, ties)
        qpath, rpath = _write(tmp_path, qrels, run)
        lists = rm.read_trec_run(rpath)  # trec_eval's order: score desc, ties by docno desc
        truth = rm.read_trec_qrels(qpath)
        theirs = pytrec_eval.RelevanceEvaluator(qrels, set(TREC_MEASURES.values())).evaluate(run)
        for (metric, k), measure in TREC_MEASURES.items():
            ours = rm.per_user_metrics(lists, truth, k, [metric], conventions="trec_eval")[metric]
            peer = {u: v[measure] for u, v in theirs.items()}
            differences += _differences(ours, peer, f"case {case} {metric}@{k} ({measure})")
    assert not differences, "\n".join(differences[:20])


RANX_METRICS = {
    ("ndcg", 10): "ndcg@10", ("ndcg", None): "ndcg", ("map", 10): "map@10", ("map", None): "map",
    ("precision", 10): "precision@10", ("recall", 10): "recall@10", ("mrr", 10): "mrr@10",
    ("hit_rate", 10): "hit_rate@10", ("rprec", None): "r-precision",
}
RANX_CASES = 30  # ranx's numba kernels are slower to call than trec_eval's C


def test_equal_to_ranx_under_its_conventions():
    rng = np.random.default_rng(7)
    differences: list[str] = []
    for case in range(RANX_CASES):
        qrels, run = _case(rng, ties=False)  # ranx leaves the order of tied scores unspecified
        qrels = {u: d for u, d in qrels.items() if d}
        run = {u: d for u, d in run.items() if d}
        if not qrels or not run:
            continue
        lists = {u: sorted(d, key=d.get, reverse=True) for u, d in run.items()}
        r = ranx.Run.from_dict(run)
        ranx.evaluate(ranx.Qrels.from_dict(qrels), r, [*RANX_METRICS.values(), "ndcg_burges@10"], make_comparable=True)
        for (metric, k), name in RANX_METRICS.items():
            ours = rm.per_user_metrics(lists, qrels, k, [metric], conventions="ranx")[metric]
            peer = {u: float(v) for u, v in r.scores[name].items()}
            differences += _differences(ours, peer, f"case {case} {metric}@{k} ({name})")
        burges = rm.per_user_metrics(lists, qrels, 10, ["ndcg"], conventions="ranx", gain="exponential")["ndcg"]
        differences += _differences(burges, {u: float(v) for u, v in r.scores["ndcg_burges@10"].items()}, f"case {case} ndcg_burges@10")
    assert not differences, "\n".join(differences[:20])


def test_assay_defaults_differ_from_the_peers_only_where_documented():
    qrels = {"a": {"x": 1, "y": 1, "z": 1}, "none": {"x": 0}, "norun": {"x": 2}}
    run = {"a": ["x", "q"], "none": ["x"]}
    ours = rm.per_user_metrics(run, qrels, 2, ["map", "ndcg"])
    trec = rm.per_user_metrics(run, qrels, 2, ["map", "ndcg"], conventions="trec_eval")
    ranx_like = rm.per_user_metrics(run, qrels, 2, ["map", "ndcg"], conventions="ranx")
    assert ours["map"] == {"a": 1 / 2}  # AP@2 over min(|R|, 2); users without relevant items dropped
    assert trec["map"] == {"a": 1 / 3, "none": 0.0}  # map_cut_2 over |R|; no relevant -> 0
    assert ranx_like["map"] == {"a": 1 / 3, "none": 0.0, "norun": 0.0}  # make_comparable: missing run -> 0
    recbole = rm.per_user_metrics({"a": ["y", "x"]}, {"a": {"x": 3, "y": 1}}, 2, ["ndcg"], conventions="recbole")
    assert recbole["ndcg"]["a"] == pytest.approx(1.0)  # binary gain: both relevant, order irrelevant


def test_repeated_items_are_refused_or_deduplicated_never_counted_twice(tmp_path):
    with pytest.raises(BadInput, match=r"item 'a' appears twice .*ranks 1 and 2"):
        rm.recall(["a", "a", "b"], {"a": 1}, 3)
    with pytest.raises(BadInput, match=r"user 'u1': item 'a' appears twice"):
        rm.ranking_metrics({"u1": ["a", "a", "b"]}, {"u1": {"a": 1}}, k=3)
    with pytest.raises(BadInput, match=r"user 'u1': item 'a'"):
        rm.beyond_accuracy_metrics({"u1": ["a", "a"]}, ["a", "b"])
    assert rm.recall(["a", "a", "b"], {"a": 1}, 3, duplicates="first") == 1.0  # was 2.0
    assert rm.ndcg(["a", "a", "b"], {"a": 1}, 3, duplicates="first") == 1.0  # was 1.63
    dedup = rm.ranking_metrics({"u1": ["b", "a", "b", "a"]}, {"u1": {"a": 1, "c": 1}}, k=3, duplicates="first", resamples=20)
    assert dedup["recall"].value == 0.5 and dedup["map"].value == pytest.approx(0.5 / 2)
    for agg in dedup.values():
        assert agg.value <= 1.0
    run = tmp_path / "run"
    run.write_text("u1 Q0 a 1 2.0 t\nu1 Q0 b 2 1.0 t\nu1 Q0 a 3 3.0 t\n")
    with pytest.raises(BadInput, match=r"run:3: user 'u1': item 'a' appears twice in the run \(first at line 1\)"):
        rm.read_trec_run(run)
    assert rm.read_trec_run(run, duplicates="first") == {"u1": ["a", "b"]}  # best row (3.0)
    run.write_text("u1 Q0 a 1 2.0 t\nu1 Q0 b 2 1.0 t\nu1 Q0 a 3 0.5 t\n")
    assert rm.read_trec_run(run, duplicates="first") == {"u1": ["a", "b"]}
    assert rm.read_trec_run(run, duplicates="last") == {"u1": ["b", "a"]}  # ranx: the last row's 0.5
    qrels = tmp_path / "qrels"
    qrels.write_text("u1 0 a 1\nu1 0 a 0\n")
    with pytest.raises(BadInput, match=r"qrels:2: user 'u1': item 'a' is judged twice"):
        rm.read_trec_qrels(qrels)
    assert rm.read_trec_qrels(qrels, duplicates="last") == {"u1": {"a": 0.0}}


def test_cli_refuses_a_repeated_item_with_exit_2(tmp_path, capsys):
    from assay.cli.main import main

    (tmp_path / "run").write_text("u1 Q0 a 1 2.0 t\nu1 Q0 a 2 1.0 t\n")
    (tmp_path / "qrels").write_text("u1 0 a 1\n")
    assert main(["eval", "trec", str(tmp_path / "qrels"), str(tmp_path / "run")]) == 2
    assert "user 'u1': item 'a' appears twice" in capsys.readouterr().err
    assert main(["eval", "trec", str(tmp_path / "qrels"), str(tmp_path / "run"), "--duplicates", "first", "--json", "-m", "recall"]) == 0


def test_conventions_are_validated():
    with pytest.raises(BadInput, match="unknown ap_denominator convention"):
        rm.Conventions(ap_denominator="k")
    with pytest.raises(BadInput, match="unknown peer 'lenskit2'"):
        rm.Conventions.of("lenskit2")


def test_recbole_entropy_and_tail_conventions_from_its_source():
    # RecBole ShannonEntropy: -sum p ln p over the slots, divided by the number of distinct items
    recs = {1: [1, 2], 2: [1, 3]}
    p = np.array([2, 1, 1]) / 4
    textbook = float(-(p * np.log(p)).sum())
    assert rm.shannon_entropy(recs) == pytest.approx(textbook)
    assert rm.shannon_entropy(recs, convention="recbole") == pytest.approx(textbook / 3)
    # RecBole TailPercentage: tail_ratio 0.1 of 20 items = the 2 least popular (ties by id)
    popularity = {i: (5 if i in (3, 7) else 10 + i) for i in range(20)}
    assert rm.long_tail_items(popularity, convention="recbole") == {3, 7}
    assert rm.long_tail_items(popularity, convention="recbole", tail_ratio=12) == {0, 1, 2, 3, 7}
    assert len(rm.long_tail_items(popularity)) == 16  # assay: outside the top 20% head


def test_malformed_trec_lines_are_named_by_file_and_line(tmp_path):
    run = tmp_path / "run"
    for text, message in [
        ("u1 Q0 a 1 2.0 t\n\nu1 Q0 b 2 1.0 t extra\n", r"run:3: expected 'qid Q0 docno rank score tag', got 7 fields"),
        ("u1 Q0 a 1 2.0 t\n\n   \nu1 Q0 b 2\n", r"run:4: expected .* got 4 fields"),
        ("u1 Q0 a 1 2.0 t\nu1 Q0 b 2 high t\n", r"run:2: score 'high' is not a finite number"),
        ("u1 Q0 a 1 inf t\n", r"run:1: score 'inf' is not a finite number"),
    ]:
        run.write_text(text)
        with pytest.raises(BadInput, match=message):
            rm.read_trec_run(run)
    run.write_text('u"1 Q0 "a 1 2.0 t\nu"1 Q0 b 2 3.0 t\n')  # quotes are plain characters, as in trec_eval
    assert rm.read_trec_run(run) == {'u"1': ["b", '"a']}
    run.write_text("")
    assert rm.read_trec_run(run) == {}
    with pytest.raises(BadInput, match="cannot read"):
        rm.read_trec_run(tmp_path / "missing")
    qrels = tmp_path / "qrels"
    qrels.write_text("u1 0 a x\n")
    with pytest.raises(BadInput, match=r"qrels:1: rel 'x' is not a finite number"):
        rm.read_trec_qrels(qrels)


def test_trec_files_that_are_not_regular_files_are_refused_at_once(tmp_path):
    """A probe's FIFO as the qrels held ``assay eval trec`` forever, and /dev/zero (one endless
    line) was read until memory ran out: only regular files are read."""
    import os

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    with pytest.raises(BadInput, match=r"qrels: .*fifo is a FIFO"):
        rm.read_trec_qrels(tmp_path / "fifo")
    with pytest.raises(BadInput, match=r"run: .*zero is a device"):
        rm.read_trec_run(tmp_path / "zero")
    with pytest.raises(BadInput, match=r"run: .* is a folder"):
        rm.read_trec_run(tmp_path)


def test_bench_quick_smoke(typed_bench):
    out = typed_bench("recsys")
    f = out["figures"]
    assert out["detail"]["rows"] == 100_000 and f["metrics_s"] > 0 and f["vs_ranx"] > 0
    assert f["max_abs_difference_vs_ranx"] < 1e-12  # the two computed the same numbers
    assert out["baseline"]["ranx_s"] > 0 and out["targets"]["vs_ranx"]["value"] == 1.0 and set(out["met"]) == {"vs_ranx"}


def test_a_cut_off_below_1_is_refused(tmp_path):
    """A probe's ``eval trec -k -1`` was a ZeroDivisionError traceback; k is at least 1 (0 on the
    command line means the whole list)."""
    from assay.cli.main import main

    (tmp_path / "qrels").write_text("u1 0 a 1\n")
    (tmp_path / "run").write_text("u1 Q0 a 1 1.0 t\n")
    for k in (-1, 1.5, True):
        with pytest.raises(BadInput, match="the cut-off k"):
            rm.ranking_metrics({"u1": ["a"]}, {"u1": {"a": 1.0}}, k)
    assert main(["eval", "trec", str(tmp_path / "qrels"), str(tmp_path / "run"), "-k", "-1"]) == 2
    assert main(["eval", "trec", str(tmp_path / "qrels"), str(tmp_path / "run"), "-k", "0", "--json"]) == 0


def test_trec_json_output_is_json_even_when_a_metric_is_undefined(tmp_path, capsys):
    """A probe's empty qrels gave NaN metrics, which ``--json`` printed as ``NaN`` (not JSON,
    RFC 8259): an undefined metric is printed as null."""
    import json

    from assay.cli.main import main
    from assay.files import refuse_constant

    (tmp_path / "qrels").write_text("")
    (tmp_path / "run").write_text("u1 Q0 a 1 1.0 t\n")
    capsys.readouterr()
    assert main(["eval", "trec", str(tmp_path / "qrels"), str(tmp_path / "run"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=refuse_constant)  # NaN/Infinity would raise here
    assert out["metrics"] and all(m["value"] is None for m in out["metrics"].values())
