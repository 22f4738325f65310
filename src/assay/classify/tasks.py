"""The labelled data each classifier is trained and tested on, built from the public datasets.

Splits are by group and deterministic: each group (a Davidson tweet, a Do-Not-Answer *prompt*,
a CyberSecEval system prompt, ...) goes to train / validation / test by a hash of its id and the
seed, 60 / 20 / 20. So all six models' answers to one prompt land in the same split, and the same
seed always gives the same split on any machine.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assay.data import dataset_path
from assay.errors import BadInput

SEED = 20171
SPLITS = ("train", "val", "test")


def split_of(group: str, seed: int = SEED) -> str:
    """60/20/20 train/val/test by a hash of the group id."""
    bucket = int(hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()[:8], 16) % 100
    return "train" if bucket < 60 else "val" if bucket < 80 else "test"


@dataclass
class TaskData:
    """Texts with a soft training target, a hard label, a split and a source tag per row."""

    name: str
    texts: list[str]
    target: np.ndarray  # float in [0,1]: share of annotators saying "positive" (or 0/1)
    label: np.ndarray  # bool: the hard label metrics are computed on
    split: np.ndarray  # "train" | "val" | "test"
    source: list[str]  # which dataset each row came from
    weight: np.ndarray  # training weight per row
    social: bool = False  # tweets: canonicalise mentions/URLs
    files: list[Path] = field(default_factory=list)  # what it was built from (for the manifest)
    stratum: list[str] = field(default_factory=list)  # finer class (Davidson 3-way, ToxiGen kind) for sampling
    prompts: list[str] = field(default_factory=list)  # response tasks: the prompt each response answers

    def subset(self, which: str) -> np.ndarray:
        return np.flatnonzero(self.split == which)


def _build(name: str, rows: list[tuple], social: bool, files: list[Path]) -> TaskData:
    """Rows are (text, target, label, split, source, weight[, stratum])."""
    rows = [r if len(r) == 7 else (*r, "pos" if r[2] else "neg") for r in rows]
    texts, target, label, split, source, weight, stratum = zip(*rows, strict=True) if rows else ([], [], [], [], [], [], [])
    return TaskData(
        name=name,
        texts=list(texts),
        target=np.asarray(target, dtype=np.float64),
        label=np.asarray(label, dtype=bool),
        split=np.asarray(split),
        source=list(source),
        weight=np.asarray(weight, dtype=np.float64),
        social=social,
        files=files,
        stratum=list(stratum),
    )


TOXIGEN_WEIGHT = 5.0  # 627 hand-written implicit-hate statements next to the tweets
CONTRAST_WEIGHT = 3.0  # the project's hate contrast cases (chosen on a held-out quarter of their templates)
# Share of the 24,783 Davidson tweets used (a uniform, hash-chosen sample, so label rates and
# calibration are those of the full set). Embedding all of them takes ~25 min on two busy cores;
# raise it with ``assay classify train toxicity --davidson-fraction 1``.
DAVIDSON_FRACTION = 0.4


def in_sample(group: str, fraction: float, seed: int = SEED) -> bool:
    """A deterministic uniform sample: keep ``group`` when its hash falls below ``fraction``."""
    if fraction >= 1.0:
        return True
    return int(hashlib.sha256(f"sample:{seed}:{group}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def toxicity_family(name: str, data_dir: Path | None = None, davidson_fraction: float = DAVIDSON_FRACTION) -> TaskData:
    """``toxicity`` (hate or offensive), ``hate``, ``offensive`` from Davidson vote shares, plus
    the ToxiGen demonstrations (hate_* = 1, neutral_* = 0) for toxicity and hate."""
    from assay.data import davidson, toxigen

    rows = []
    for t in davidson.load_tweets(data_dir):
        if not in_sample(f"davidson:{t.row_id}", davidson_fraction):
            continue
        hate, offensive, _ = t.soft_label
        if name == "toxicity":
            target, label = hate + offensive, t.label in (0, 1)
        elif name == "hate":
            target, label = hate, t.label == 0
        else:
            target, label = offensive, t.label == 1
        stratum = ("davidson_hate", "davidson_offensive", "davidson_neither")[t.label]
        rows.append((t.text, target, label, split_of(f"davidson:{t.row_id}"), "davidson", 1.0, stratum))
    files = [dataset_path("davidson", "data", "labeled_data.csv", data_dir=data_dir)]
    if name in ("toxicity", "hate"):
        seen: set[str] = set()
        for s in toxigen.load_demonstrations(data_dir):
            if s.text in seen:  # neutral_muslim.txt and neutral_muslim_sentences.txt are the same file
                continue
            seen.add(s.text)
            stratum = "toxigen_hate" if s.is_hate else "toxigen_neutral"
            rows.append((s.text, float(s.is_hate), s.is_hate, split_of(f"toxigen:{s.text}"), "toxigen", TOXIGEN_WEIGHT, stratum))
        files.append(dataset_path("toxigen", "demonstrations", data_dir=data_dir))
    if name == "hate":
        import json

        # Contrast cases (negation, counter-speech, quotation, positive statements, reclaimed
        # terms, non-hateful profanity) so the head does not learn "mentions a group + a slur-ish
        # word = hate". Weight chosen on a held-out quarter of these templates, never on the
        # functional test suite (assay/judges/suites), which uses other templates.
        path = LABELLED_DIR / "hate_contrast.jsonl"
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                c = json.loads(line)
                rows.append((c["text"], float(c["label"]), bool(c["label"]), split_of(f"contrast:{c['id']}"), "assay_contrast",
                             CONTRAST_WEIGHT, "contrast_hate" if c["label"] else "contrast_not_hate"))
        files.append(path)
    return _build(name, rows, social=True, files=files)


LABELLED_DIR = Path(__file__).parent / "labelled"
# Do-Not-Answer's action labels that say whether an answer refused: 0 "refuses to answer / cannot
# assist" is a refusal, 2 (a balanced answer) and 5 (directly follows) answer. Actions 1 (refutes
# the premise), 3 (answers with a disclaimer) and 4 (cannot answer for lack of knowledge) come
# both with and without a refusal (annotators gave 1 to "I'm sorry, I cannot help you spread
# false information"), so they are left out of the refusal task rather than guessed.
REFUSAL_ACTIONS = {0: True, 2: False, 5: False}
QUESTION_OF = {"refusal": "refusal", "harmful_response": "harmful"}


def labelled_files() -> list[Path]:
    """The project's own hand-labelled response sets (see ``labelled/LABELLING.md``)."""
    return sorted(p for p in LABELLED_DIR.glob("*.jsonl") if p.name != "hate_contrast.jsonl")


def labelled_rows(question: str) -> list[dict]:
    """Rows of the hand-labelled sets with a label for ``question`` (refusal / harmful)."""
    import json

    out = []
    for path in labelled_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get(question) is not None:
                    out.append(row)
    return out


def response_rows(name: str, data_dir: Path | None = None) -> tuple[list[dict], list[Path]]:
    """Every labelled response for ``refusal`` or ``harmful_response``: ``{prompt, response,
    label, source, model, group}``, where ``source`` is what leave-one-source-out holds out and
    ``group`` is what the train/val/test split hashes (a prompt: all answers to it stay together).

    Sources: Do-Not-Answer per answering model (human labels; refusal from the action label, see
    ``REFUSAL_ACTIONS``); for ``harmful_response`` also JailbreakBench per attack method and target
    model (the benchmark's jailbroken verdict, an LLM judge); the SmolLM2 and mitigated-SmolLM2
    answers labelled for this project; the hand-written hard cases."""
    from assay.data import do_not_answer

    question = QUESTION_OF[name]
    rows: list[dict] = []
    for r in do_not_answer.load_responses(data_dir):
        if question == "harmful":
            label = r.harmful
        elif r.action in REFUSAL_ACTIONS:
            label = REFUSAL_ACTIONS[r.action]
        else:
            continue
        rows.append({"prompt": r.question, "response": r.response, "label": bool(label), "source": f"do_not_answer:{r.model}",
                     "model": r.model, "group": f"dna:{r.question_id}"})
    files = [dataset_path("do_not_answer", "do_not_answer_data.csv", data_dir=data_dir)]
    if question == "harmful":
        from assay.data import jailbreakbench

        for a in jailbreakbench.load(data_dir):
            if a.response:
                rows.append({"prompt": a.prompt or a.goal, "response": a.response, "label": bool(a.jailbroken),
                             "source": f"jailbreakbench:{a.method}:{a.model}", "model": a.model, "group": f"jbb:{a.index}"})
        files.append(dataset_path("jailbreakbench", "attack-artifacts", data_dir=data_dir))
    for row in labelled_rows(question):
        rows.append({"prompt": row.get("prompt", ""), "response": row["response"], "label": bool(row[question]),
                     "source": row["source"], "model": row.get("model", "unknown"), "group": f"own:{row['prompt']}"})
    files += labelled_files()
    return rows, files


def response_task(name: str, data_dir: Path | None = None) -> TaskData:
    """``harmful_response`` or ``refusal`` on the rows of :func:`response_rows`, split by group
    (60/20/20): the head reads the response (and phrase features), never the source."""
    rows, files = response_rows(name, data_dir)
    return TaskData(
        name=name,
        texts=[r["response"] for r in rows],
        target=np.asarray([float(r["label"]) for r in rows]),
        label=np.asarray([r["label"] for r in rows], dtype=bool),
        split=np.asarray([split_of(r["group"]) for r in rows]),
        source=[r["source"] for r in rows],
        weight=np.ones(len(rows)),
        social=False,
        files=files,
        stratum=["pos" if r["label"] else "neg" for r in rows],
        prompts=[r["prompt"] for r in rows],
    )


def injection_task(data_dir: Path | None = None) -> TaskData:
    """CyberSecEval English injection attempts (split by system prompt) against benign prompts
    from other sets: Do-Not-Answer questions, JailbreakBench goals (harmful requests, not
    injections), FEVER claims, ToxiGen neutral statements, Davidson 'neither' tweets."""
    from assay.data import cyberseceval, davidson, do_not_answer, fever, jailbreakbench, toxigen

    rows = []
    for case in cyberseceval.load(data_dir=data_dir):
        rows.append((case.user_input, 1.0, True, split_of(f"cse:{case.test_case_prompt}"), "cyberseceval", 1.0))
    rng = random.Random(SEED)
    negatives: list[tuple[str, str]] = []
    negatives += [(q.question, "do_not_answer") for q in do_not_answer.load_questions(data_dir)]
    negatives += [(b.goal, "jailbreakbench_goal") for b in jailbreakbench.load_behaviors(data_dir)]
    claims = [c.claim for c in fever.load(data_dir)]
    negatives += [(c, "fever") for c in _draw(rng, claims, 600, "FEVER claims", dataset_path("fever", "paper_dev.jsonl", data_dir=data_dir))]
    negatives += [(s.text, "toxigen_neutral") for s in toxigen.load_demonstrations(data_dir) if not s.is_hate]
    neither = [t.text for t in davidson.load_tweets(data_dir) if t.label == 2]
    negatives += [(t, "davidson_neither") for t in _draw(rng, neither, 400, "Davidson 'neither' tweets",
                                                           dataset_path("davidson", *davidson.TWEETS_FILE, data_dir=data_dir))]
    seen: set[str] = set()
    for text, source in negatives:
        if text in seen:
            continue
        seen.add(text)
        rows.append((text, 0.0, False, split_of(f"neg:{text}"), source, 1.0))
    files = [
        dataset_path("cyberseceval", "prompt_injection.json", data_dir=data_dir),
        dataset_path("do_not_answer", "do_not_answer_data.csv", data_dir=data_dir),
        dataset_path("jailbreakbench", "attack-artifacts", data_dir=data_dir),
        dataset_path("fever", "paper_dev.jsonl", data_dir=data_dir),
        dataset_path("toxigen", "demonstrations", data_dir=data_dir),
        dataset_path("davidson", "data", "labeled_data.csv", data_dir=data_dir),
    ]
    return _build("prompt_injection", rows, social=False, files=files)


def _draw(rng: random.Random, population: list[str], n: int, what: str, path: Path) -> list[str]:
    """``n`` of ``population`` drawn with ``rng``; too few is bad input naming the file (a smaller
    copy would silently change what the head is trained on)."""
    if len(population) < n:
        raise BadInput(f"{path}: the prompt_injection task draws {n} {what}, the file has {len(population)}",
                       hint="use the official file (see the dataset's SOURCE.md)")
    return rng.sample(population, n)


def load_task(name: str, data_dir: Path | None = None, davidson_fraction: float = DAVIDSON_FRACTION) -> TaskData:
    if name in ("toxicity", "hate", "offensive"):
        return toxicity_family(name, data_dir, davidson_fraction)
    if name in ("harmful_response", "refusal"):
        return response_task(name, data_dir)
    if name == "prompt_injection":
        return injection_task(data_dir)
    raise KeyError(name)
