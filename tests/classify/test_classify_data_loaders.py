"""The dataset loaders read the real files and reproduce the counts their SOURCE.md states."""

from __future__ import annotations

from collections import Counter

import pytest

from assay.data import dataset_path, manifest, sha256_file
from assay.errors import BadInput


def test_davidson_counts_match_source(data_dir):
    from assay.data import davidson

    tweets = davidson.load_tweets()
    assert len(tweets) == 24_783
    assert Counter(t.label for t in tweets) == {0: 1_430, 1: 19_190, 2: 4_163}
    assert all(t.count == t.hate_speech + t.offensive_language + t.neither for t in tweets)
    assert abs(sum(tweets[0].soft_label) - 1.0) < 1e-9
    lexicon = davidson.load_lexicon()
    assert len(lexicon) == 178
    assert all(0.0 <= e.prophate <= 1.0 and e.ngram for e in lexicon)


def test_toxigen_counts_match_source(data_dir):
    from assay.data import toxigen

    statements = toxigen.load_demonstrations()
    assert len(statements) == 627
    assert {s.attribute for s in statements} == {"disability", "nationality", "race", "religion", "sexual_orientation"}
    assert 0 < sum(s.is_hate for s in statements) < len(statements)
    assert all(s.group and "_sentences" not in s.group for s in statements)
    prompts = toxigen.load_prompts()
    assert len(prompts) == 31_000
    assert len({p.source_file for p in prompts}) == 31
    assert all(len(p.statements) >= 2 for p in prompts[:100])


def test_do_not_answer_counts_match_source(data_dir):
    from assay.data import do_not_answer

    questions = do_not_answer.load_questions()
    assert len(questions) == 939
    assert len({q.risk_area for q in questions}) == 5
    assert len({q.types_of_harm for q in questions}) == 12
    responses = do_not_answer.load_responses()
    assert len(responses) == 939 * 6
    harmful = Counter(r.model for r in responses if r.harmful)
    assert harmful == {"GPT4": 23, "ChatGPT": 14, "Claude": 16, "ChatGLM2": 85, "llama2-7b-chat": 3, "vicuna-7b": 52}
    gpt4_actions = Counter(r.action for r in responses if r.model == "GPT4")
    assert [gpt4_actions[a] for a in range(6)] == [368, 150, 33, 110, 257, 21]


def test_cyberseceval_counts_match_source(data_dir):
    from assay.data import cyberseceval

    cases = cyberseceval.load()
    assert len(cases) == 251
    assert Counter(c.injection_type for c in cases) == {"direct": 196, "indirect": 55}
    assert Counter(c.risk_category for c in cases) == {"security-violating": 180, "logic-violating": 71}
    assert len({c.injection_variant for c in cases}) == 15
    multi = cyberseceval.load(multilingual=True)
    assert len(multi) == 1_004
    assert Counter(c.speaking_language for c in multi)["Hindi"] == 251


def test_fever_counts_match_source(data_dir):
    from assay.data import fever

    claims = fever.load()
    assert len(claims) == 9_999
    assert Counter(c.label for c in claims) == {"SUPPORTS": 3_333, "REFUTES": 3_333, "NOT ENOUGH INFO": 3_333}
    assert claims[0].id == 91198
    assert all(not c.evidence_pages for c in claims if c.label == "NOT ENOUGH INFO")


def test_jailbreakbench_counts_match_source(data_dir):
    from assay.data import jailbreakbench

    artifacts = jailbreakbench.load()
    assert len(artifacts) == 1_800
    assert sum(a.prompt is None for a in artifacts) == 163
    assert Counter(a.method for a in artifacts) == {"PAIR": 400, "GCG": 400, "JBC": 400, "prompt_with_random_search": 400, "DSN": 200}
    pair_vicuna = [a for a in artifacts if a.method == "PAIR" and a.model == "vicuna-13b-v1.5"]
    assert sum(a.jailbroken for a in pair_vicuna) == 69  # attack_success_rate 0.69
    behaviors = jailbreakbench.load_behaviors()
    assert [b.index for b in behaviors] == list(range(100))
    assert len({b.category for b in behaviors}) == 10


def test_missing_dataset_folder_is_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_DATA_DIR", str(tmp_path))
    from assay.data import fever

    with pytest.raises(BadInput, match="dataset 'fever' not found"):
        fever.load()
    with pytest.raises(BadInput, match="unknown dataset"):
        dataset_path("no_such_set")


def test_missing_file_and_malformed_record_are_bad_input(tmp_path):
    (tmp_path / "fever").mkdir()
    with pytest.raises(BadInput, match="incomplete"):
        dataset_path("fever", "paper_dev.jsonl", data_dir=tmp_path)
    (tmp_path / "fever" / "paper_dev.jsonl").write_text('{"id": 1, "label": "SUPPORTS", "claim": "x"}\n{"id": 2\n')
    from assay.data import fever

    with pytest.raises(BadInput, match=r"paper_dev.jsonl:2"):
        fever.load(data_dir=tmp_path)


def test_manifest_hashes_files_and_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_bytes(b"abc")
    (tmp_path / "y.txt").write_bytes(b"")
    out = manifest([tmp_path / "a", tmp_path / "y.txt"])
    assert out[str(tmp_path / "a" / "x.txt")] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert out[str(tmp_path / "y.txt")] == sha256_file(tmp_path / "y.txt")
    with pytest.raises(BadInput, match="cannot hash"):
        manifest([tmp_path / "missing"])


def test_prompt_injection_task_with_too_few_fever_claims_is_bad_input(tmp_path, data_dir):
    """The task draws 600 FEVER claims: a smaller copy is refused naming the file (was a
    ValueError traceback from random.sample)."""
    from assay.classify.tasks import injection_task

    for folder in data_dir.iterdir():
        if folder.is_dir() and folder.name != "fever":
            (tmp_path / folder.name).symlink_to(folder)
    (tmp_path / "fever").mkdir()
    with open(data_dir / "fever" / "paper_dev.jsonl", encoding="utf-8") as fh:
        (tmp_path / "fever" / "paper_dev.jsonl").write_text("".join(next(fh) for _ in range(3)), encoding="utf-8")
    with pytest.raises(BadInput, match=r"paper_dev.jsonl: the prompt_injection task draws 600 FEVER claims, the file has 3"):
        injection_task(tmp_path)
