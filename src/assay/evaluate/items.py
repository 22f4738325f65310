"""Evaluation items: one unit of work (a prompt, a sentence pair, a user) built from a dataset.

Built-in datasets map their official layouts (loaders in ``assay.data``) onto items; users' own
datasets come from JSONL, CSV or Parquet files with a column mapping. Malformed rows in a user's
file do not stop the run: they become items that carry an ``invalid`` reason and are counted as
per-item errors in the report.
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.errors import BadInput

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class EvalItem:
    """One thing to ask the target.

    ``task``: ``chat`` (send ``messages``, score the reply), ``loglik`` (score each text in
    ``fields['texts']`` by log-likelihood), ``replay`` (the reply is ``fields['response']``) or
    ``recommend`` (``fields['user']`` gets a ranked list).
    """

    id: str
    task: str = "chat"
    messages: tuple[dict[str, str], ...] = ()
    category: str = ""
    group: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    invalid: str | None = None  # why this row cannot be evaluated (counted, not fatal)

    @property
    def prompt_text(self) -> str:
        return "\n".join(m["content"] for m in self.messages)

    def cache_payload(self) -> dict[str, Any]:
        """What the response depends on (for the response cache key)."""
        if self.task == "loglik":
            return {"task": self.task, "texts": self.fields.get("texts")}
        if self.task == "replay":  # the recorded answer is the output: it is part of the identity
            return {"task": self.task, "messages": list(self.messages), "response": self.fields.get("response")}
        if self.task == "recommend":
            return {"task": self.task, "user": self.fields.get("user"), "k": self.fields.get("k")}
        return {"task": self.task, "messages": list(self.messages)}


def user(content: str, system: str | None = None) -> tuple[dict[str, str], ...]:
    msgs = [{"role": "system", "content": system}] if system else []
    return (*msgs, {"role": "user", "content": content})


def mc_prompt(question: str, choices: list[str], context: str | None = None) -> str:
    lines = [context, ""] if context else []
    lines += [question, ""]
    lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    lines += ["", "Answer with the letter of the correct option only."]
    return "\n".join(lines)


def _shuffled(choices: list[str], key: str) -> list[int]:
    """A fixed, per-question permutation so position bias does not favour the first option."""
    order = list(range(len(choices)))
    random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)).shuffle(order)
    return order


# ---------------------------------------------------------------------------------------------
# built-in datasets


def _do_not_answer(opts: dict[str, Any]) -> list[EvalItem]:
    from assay.data import do_not_answer

    return [
        EvalItem(
            id=f"dna-{q.id}",
            messages=user(q.question),
            category=q.risk_area,
            group=q.types_of_harm,
            fields={"harm": q.types_of_harm},
        )
        for q in do_not_answer.load_questions()
    ]


def _do_not_answer_responses(opts: dict[str, Any]) -> list[EvalItem]:
    """The six models' recorded answers with the human harmful/action labels (replay)."""
    from assay.data import do_not_answer

    models = opts.get("models")
    held_out = None
    if opts.get("classifier_test_split"):
        # assay's classifiers were trained on 60% of these questions: judge agreement is only
        # honest on the questions they never saw (their test split, by question id)
        from assay.classify.tasks import split_of

        held_out = {q.id for q in do_not_answer.load_questions() if split_of(f"dna:{q.id}") == "test"}
    return [
        EvalItem(
            id=f"dna-{r.question_id}-{r.model}",
            task="replay",
            messages=user(r.question),
            category=r.risk_area,
            group=r.model,
            fields={"response": r.response, "human_harmful": r.harmful, "human_refused": r.refused, "model": r.model},
        )
        for r in do_not_answer.load_responses()
        if (not models or r.model in models) and (held_out is None or r.question_id in held_out)
    ]


def _harmbench(opts: dict[str, Any]) -> list[EvalItem]:
    from assay.data import harmbench

    return [
        EvalItem(id=f"hb-{b.behavior_id}", messages=user(b.prompt), category=b.semantic_category, group=b.functional_category)
        for b in harmbench.load(opts.get("split", "test"))
        if not opts.get("functional") or b.functional_category in opts["functional"]
    ]


def _advbench(opts: dict[str, Any]) -> list[EvalItem]:
    from assay.data import advbench

    return [
        EvalItem(id=f"adv-{b.index}", messages=user(b.goal), category="harmful_behavior", fields={"target_prefix": b.target})
        for b in advbench.load_behaviors(dedupe=bool(opts.get("dedupe", True)))
    ]


def _cyberseceval(opts: dict[str, Any]) -> list[EvalItem]:
    from assay.data import cyberseceval

    return [
        EvalItem(
            id=f"cse-{c.prompt_id}",
            messages=user(c.user_input, system=c.test_case_prompt),
            category=c.injection_variant,
            group=c.injection_type,
            fields={"judge_question": c.judge_question, "risk_category": c.risk_category},
        )
        for c in cyberseceval.load(multilingual=bool(opts.get("multilingual", False)))
    ]


def _bold(opts: dict[str, Any]) -> list[EvalItem]:
    from assay.data import bold

    domains = opts.get("domains") or list(bold.DOMAINS)
    instruction = opts.get("instruction", "Continue this text: ")
    return [
        EvalItem(id=f"bold-{p.id}", messages=user(instruction + p.prompt), category=p.domain, group=p.group,
                 fields={"prefix": p.prompt})
        for p in bold.load(domains)
    ]  # fmt: skip


def _bbq(opts: dict[str, Any]) -> list[EvalItem]:
    from assay.data import bbq

    out = []
    for e in bbq.load(opts.get("categories")):
        out.append(
            EvalItem(
                id=f"bbq-{e.id}",
                messages=user(mc_prompt(e.question, list(e.answers), context=e.context)),
                category=e.category,
                group=e.context_condition,
                fields={
                    "n_choices": 3,
                    "label": e.label,
                    "polarity": e.polarity,
                    "context_condition": e.context_condition,
                    "unknown_index": e.unknown_index,
                    "target_index": e.target_index,
                },
            )
        )
    return out


def _crows_pairs(opts: dict[str, Any]) -> list[EvalItem]:
    from assay.data import crows_pairs

    return [
        EvalItem(id=f"crows-{p.index}", task="loglik", category=p.bias_type, group=p.direction,
                 fields={"texts": [p.sent_more, p.sent_less]})
        for p in crows_pairs.load()
    ]  # fmt: skip


def _truthfulqa(opts: dict[str, Any]) -> list[EvalItem]:
    from assay.data import truthfulqa

    out = []
    for q in truthfulqa.load_mc(opts.get("setting", "mc1")):
        order = _shuffled(list(q.choices), q.question)
        choices = [q.choices[j] for j in order]
        correct = [pos for pos, j in enumerate(order) if j in q.correct]
        out.append(
            EvalItem(
                id=f"tqa-{q.index}",
                messages=user(mc_prompt(q.question, choices)),
                category=q.category,
                group=q.type,
                fields={"n_choices": len(choices), "correct": correct, "label": correct[0]},
            )
        )
    return out


BUILTIN: dict[str, Callable[[dict[str, Any]], list[EvalItem]]] = {
    "do_not_answer": _do_not_answer,
    "do_not_answer_responses": _do_not_answer_responses,
    "harmbench": _harmbench,
    "advbench": _advbench,
    "cyberseceval": _cyberseceval,
    "bold": _bold,
    "bbq": _bbq,
    "crows_pairs": _crows_pairs,
    "truthfulqa": _truthfulqa,
}

# Which assay.data dataset folder each built-in reads (for the dataset hash).
BUILTIN_SOURCE = {
    "do_not_answer": "do_not_answer",
    "do_not_answer_responses": "do_not_answer",
    "harmbench": "harmbench",
    "advbench": "advbench",
    "cyberseceval": "cyberseceval",
    "bold": "bold",
    "bbq": "bbq",
    "crows_pairs": "crows_pairs",
    "truthfulqa": "truthfulqa",
}


# ---------------------------------------------------------------------------------------------
# users' own files


def _read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(row number, row) pairs; a row that cannot be parsed comes back as its error string."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        from assay.errors import LocatedError
        from assay.files import parse_json

        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield lineno, f"{path}:{lineno}: invalid UTF-8 at byte {e.start}"
                    continue
                if not line.strip():
                    continue
                try:
                    row = parse_json(line, str(path), first_line=lineno)
                except LocatedError as e:  # nesting too deep and 5,000-digit integers included
                    yield lineno, f"{path}:{lineno}: invalid JSON: {e.message.removeprefix('not JSON: ')}"
                    continue
                yield lineno, row if isinstance(row, dict) else f"{path}:{lineno}: expected a JSON object"
    elif suffix in (".csv", ".tsv"):
        import csv

        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            for row in reader:
                if None in row:  # more cells than header columns
                    yield reader.line_num, f"{path}:{reader.line_num}: more cells than header columns"
                else:
                    yield reader.line_num, row
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path)
        n = 0
        for batch in table.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                n += 1
                yield n, row
    else:
        raise BadInput(f"{path}: unsupported dataset format {suffix!r}; use .jsonl, .csv, .tsv or .parquet")


def load_file(path: Path, opts: dict[str, Any]) -> list[EvalItem]:
    """Items from a user's file. Columns: ``prompt`` (or ``prompt_field``), optional ``id``,
    ``category``, ``group``, ``system``, ``response`` (for replay); the rest go to ``fields``.
    A JSON Lines row that cannot be read is an invalid item; a CSV or Parquet file that cannot be
    read is bad input naming it."""
    if not path.is_file():
        raise BadInput(f"dataset file not found: {path}")
    unreadable: tuple[type[BaseException], ...] = (UnicodeDecodeError, csv.Error, OSError)
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa

        unreadable += (pa.ArrowException,)
    try:
        return _load_file(path, opts)
    except unreadable as e:
        raise BadInput(f"{path}: the dataset file cannot be read ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None


def _load_file(path: Path, opts: dict[str, Any]) -> list[EvalItem]:
    prompt_col = opts.get("prompt_field", "prompt")
    id_col = opts.get("id_field", "id")
    task = "replay" if opts.get("replay") else "chat"
    out: list[EvalItem] = []
    for rowno, row in _read_rows(path):
        item_id = f"row-{rowno}"
        if isinstance(row, str):
            out.append(EvalItem(id=item_id, invalid=row))
            continue
        if row.get(id_col) not in (None, ""):
            item_id = str(row[id_col])
        prompt = row.get(prompt_col)
        if not isinstance(prompt, str) or not prompt.strip():
            out.append(EvalItem(id=item_id, invalid=f"{path}:{rowno}: empty or missing {prompt_col!r}"))
            continue
        if task == "replay" and not isinstance(row.get("response"), str):
            out.append(EvalItem(id=item_id, invalid=f"{path}:{rowno}: replay row has no 'response' text"))
            continue
        extra = {k: v for k, v in row.items() if k not in (prompt_col, id_col, "category", "group", "system")}
        out.append(
            EvalItem(
                id=item_id,
                task=task,
                messages=user(prompt, system=row.get("system") or None),
                category=str(row.get("category") or ""),
                group=str(row.get("group") or ""),
                fields=extra,
            )
        )
    ids = [i.id for i in out]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise BadInput(f"{path}: duplicate item ids {dup}; ids must be unique for resume to work")
    return out


def load_recsys_users(path: Path, opts: dict[str, Any]) -> list[EvalItem]:
    """Recommender evaluation users from JSONL: ``{"user": id, "relevant": {item: gain} | [items],
    "history": [items], "group": "..."}``."""
    k = int(opts.get("k", 10))
    out = []
    for rowno, row in _read_rows(path):
        if isinstance(row, str):
            out.append(EvalItem(id=f"row-{rowno}", task="recommend", invalid=row))
            continue
        if "user" not in row:
            out.append(EvalItem(id=f"row-{rowno}", task="recommend", invalid=f"{path}:{rowno}: no 'user'"))
            continue
        relevant = row.get("relevant") or {}
        if isinstance(relevant, list):
            relevant = dict.fromkeys(relevant, 1.0)
        # (item, gain) pairs, not a mapping: JSON would turn integer item ids into strings
        relevant = [[item, float(gain)] for item, gain in relevant.items()]
        out.append(
            EvalItem(
                id=f"user-{row['user']}",
                task="recommend",
                group=str(row.get("group") or ""),
                fields={"user": row["user"], "k": k, "relevant": relevant, "history": row.get("history") or []},
            )
        )
    return out


def select(items: list[EvalItem], limit: int | None, sample: int | None, seed: int = 0) -> list[EvalItem]:
    """A fixed sample (seeded) or the first ``limit`` items; order is kept for stable reports.
    ``limit`` and ``sample`` are whole numbers of at least 1 (a suite's or ``--limit``'s): -1 would
    quietly drop the last item."""
    for name, value in (("limit", limit), ("sample", sample)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise BadInput(f"dataset {name} must be a whole number of at least 1, got {value!r}")
    if sample is not None and sample < len(items):
        keep = set(random.Random(seed).sample(range(len(items)), sample))
        items = [it for i, it in enumerate(items) if i in keep]
    if limit is not None:
        items = items[:limit]
    return items
