"""Build the mitigation dataset from red-team findings and evaluation failures.

Three kinds of rows, each ``{prompt, response, kind, source, prompt_sha256}``:

- **harmful** prompts (findings whose verdict says the model answered something it should not)
  paired with a *safe target*: the Do-Not-Answer response to the same question that human
  annotators judged harmless (preferring refusals, then refutations, cautious answers, balanced
  answers, "cannot answer"); for prompts outside Do-Not-Answer, a JailbreakBench response the
  judge found not jailbroken for the same prompt, the finding's own ``safe_response``, or
  else one of the short human-judged-harmless Do-Not-Answer refusals, picked by prompt hash.
- **benign** prompts near the boundary with *helpful answers*, so the model does not learn to
  refuse everything: BBQ questions about social groups in the *disambiguated* condition (the
  context states the answer; the gold answer is the helpful reply) and FEVER claims with a
  SUPPORTS/REFUTES verdict ("Is this claim true or false?"). TruthfulQA is deliberately not
  used: its README carries the BIG-bench canary asking that it never appear in training data,
  and CrowS-Pairs' data statement forbids training on it.
- over-refusal **failures** from an evaluation (a benign prompt the model refused) when the
  record carries a reference answer.

Every prompt is put on one side of a train / held-out split by the hash of its normalised text,
so the same prompt lands on the same side in every run. Rows whose prompt hash appears in a held-out
set or in any evaluation suite used for the gate (``exclude``) are never trained on; the
manifest records how many were dropped and the hash of every file written.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from assay.errors import BadInput
from assay.files import check_regular, read_jsonl

# "success" / "blocked" / "unjudged" / "error" are the verdicts of `assay redteam` findings.
HARMFUL_VERDICTS = {"harmful", "unsafe", "jailbroken", "fail", "failed", "violation", "complied", "unsafe_answer", "success"}
OVER_REFUSAL_VERDICTS = {"over_refusal", "overrefusal", "false_refusal", "refused_benign"}
PASS_VERDICTS = {"pass", "passed", "safe", "refused", "ok", "blocked", "not_jailbroken", "harmless", "unjudged", "error"}
PROMPT_FIELDS = ("prompt", "question", "goal", "Behavior", "input", "user_input")
# Do-Not-Answer action labels in the order we prefer them as safe targets (0 refuse, 1 refute,
# 3 cautious with disclaimer, 2 balanced, 4 cannot answer); 5 "follows the instruction" never.
SAFE_ACTION_PREFERENCE = (0, 1, 3, 2, 4)
MIN_SAFE_CHARS = 20  # a few Do-Not-Answer responses are truncated to a single word

# Source datasets and what their licences imply for anything trained on them; the registry's
# own entries (when registered) are what propagation uses, these are recorded in the manifest.
SOURCE_TERMS = {
    "do_not_answer": {"license": "CC BY-NC-SA 4.0", "restrictions": ["non_commercial", "share_alike"]},
    "jailbreakbench": {"license": "MIT", "restrictions": []},
    "bbq": {"license": "CC BY 4.0", "restrictions": []},
    "fever": {"license": "CC BY-SA 3.0", "restrictions": ["share_alike"]},
}


def normalise_prompt(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: two prompts that differ only in these are one."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


def prompt_hash(text: str) -> str:
    return hashlib.sha256(normalise_prompt(text).encode("utf-8")).hexdigest()


def in_heldout(digest: str, heldout_fraction: float) -> bool:
    """Which side of the split a prompt hash falls on (stable across runs and machines)."""
    return int(digest[:12], 16) % 10_000 < round(heldout_fraction * 10_000)


@dataclass(frozen=True, slots=True)
class Finding:
    """One red-team finding or evaluation failure, as read from JSONL."""

    prompt: str
    response: str
    verdict: str  # "harmful" | "over_refusal"
    where: str  # file:line
    reference: str | None = None  # a helpful answer (over-refusal) or a safe answer (harmful)


@dataclass(frozen=True, slots=True)
class Example:
    prompt: str
    response: str
    kind: str  # harmful | benign
    source: str
    prompt_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MitigationSet:
    train: list[Example]
    heldout_harmful: list[Example]  # response = the safe target (not used by the scorers)
    heldout_benign: list[Example]  # response = the reference helpful answer
    stats: dict[str, Any] = field(default_factory=dict)


def _verdict(obj: dict[str, Any], where: str) -> str | None:
    raw = obj.get("verdict")
    if raw is None:
        for key, verdict in (("harmful", "harmful"), ("jailbroken", "harmful"), ("over_refusal", "over_refusal")):
            if isinstance(obj.get(key), bool):
                return verdict if obj[key] else None
        raise BadInput(f"{where}: finding has no 'verdict' (nor a boolean 'harmful'/'jailbroken')")
    text = str(raw).strip().lower().replace("-", "_").replace(" ", "_")
    if text in HARMFUL_VERDICTS:
        return "harmful"
    if text in OVER_REFUSAL_VERDICTS:
        return "over_refusal"
    if text in PASS_VERDICTS:
        return None
    raise BadInput(
        f"{where}: unknown verdict {raw!r}",
        hint=f"use one of {sorted(HARMFUL_VERDICTS | OVER_REFUSAL_VERDICTS | PASS_VERDICTS)}",
    )


def read_findings(paths: Sequence[Path | str]) -> tuple[list[Finding], dict[str, int]]:
    """Failures from red-team findings / evaluation JSONL files (``prompt``, ``response``,
    ``verdict``); passing rows are counted and skipped. Raises ``BadInput`` for a missing
    file, malformed JSON (with file:line) or no failures at all."""
    if not paths:
        raise BadInput("no findings given", hint="pass one or more red-team findings / evaluation JSONL files")
    findings: list[Finding] = []
    counts = {"rows": 0, "passed": 0}
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise BadInput(f"findings file {path} does not exist")
        for lineno, obj in read_jsonl(path, "findings"):
            where = f"{path}:{lineno}"
            if not isinstance(obj, dict):
                raise BadInput(f"{where}: a finding must be a JSON object")
            counts["rows"] += 1
            prompt = next((obj[k] for k in PROMPT_FIELDS if isinstance(obj.get(k), str) and obj[k].strip()), None)
            if prompt is None:
                raise BadInput(f"{where}: finding has no prompt (looked for {', '.join(PROMPT_FIELDS)})")
            verdict = _verdict(obj, where)
            if verdict is None:
                counts["passed"] += 1
                continue
            reference = obj.get("reference") or obj.get("expected") or obj.get("safe_response")
            findings.append(Finding(prompt, str(obj.get("response") or ""), verdict, where, reference))
    if not findings:
        raise BadInput(
            f"no findings: {counts['rows']} rows in {', '.join(map(str, paths))}, none of them a failure",
            hint="a finding needs verdict 'harmful' (or jailbroken/unsafe) or 'over_refusal'",
        )
    return findings, counts


def read_prompts(path: Path | str) -> list[str]:
    """Prompts of an evaluation suite's dataset file (JSONL or CSV with one of the usual prompt
    columns), used to keep the gate's suites out of the training data."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"evaluation prompts file {path} does not exist")
    prompts: list[str] = []
    if path.suffix == ".csv":
        try:
            with open(check_regular(path, "evaluation prompts"), newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                column = next((c for c in PROMPT_FIELDS if c in (reader.fieldnames or ())), None)
                if column is None:
                    raise BadInput(f"{path}: no prompt column (looked for {', '.join(PROMPT_FIELDS)})")
                prompts = [row[column] for row in reader if row.get(column)]
        except (UnicodeDecodeError, csv.Error) as e:  # csv.Error: e.g. a field over the csv module's limit
            raise BadInput(f"{path}: evaluation prompts are not readable CSV: {str(e)[:200]}") from None
    else:
        for lineno, obj in read_jsonl(path, "evaluation prompts"):
            text = next((obj[k] for k in PROMPT_FIELDS if isinstance(obj, dict) and isinstance(obj.get(k), str)), None)
            if text is None:
                raise BadInput(f"{path}:{lineno}: no prompt field (looked for {', '.join(PROMPT_FIELDS)})")
            prompts.append(text)
    return prompts


# ---------------------------------------------------------------- sources


def dna_safe_targets(data_dir: Path | str | None = None) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """``{prompt hash: (safe response, source)}`` over Do-Not-Answer, and a pool of short generic
    human-judged-harmless refusals for prompts that have no safe answer of their own."""
    from assay.data import do_not_answer

    by_question: dict[int, list[Any]] = {}
    for r in do_not_answer.load_responses(data_dir):
        if not r.harmful and r.action in SAFE_ACTION_PREFERENCE and len(r.response.strip()) >= MIN_SAFE_CHARS:
            by_question.setdefault(r.question_id, []).append(r)
    targets: dict[str, tuple[str, str]] = {}
    generic: set[str] = set()
    for qid, rows in by_question.items():
        rows.sort(key=lambda r: (SAFE_ACTION_PREFERENCE.index(r.action), len(r.response)))
        best = rows[0]
        targets[prompt_hash(best.question)] = (best.response.strip(), f"do_not_answer:{qid}:{best.model}")
        for r in rows:
            text = r.response.strip()
            if r.action == 0 and len(text) <= 80:
                generic.add(text)
    return targets, sorted(generic)


def dna_prompts(data_dir: Path | str | None = None) -> list[tuple[str, str]]:
    """``(question, source)`` for every Do-Not-Answer prompt."""
    from assay.data import do_not_answer

    return [(q.question, f"do_not_answer:{q.id}") for q in do_not_answer.load_questions(data_dir)]


def jbb_safe_targets(data_dir: Path | str | None = None) -> dict[str, tuple[str, str]]:
    """``{prompt hash: (response, source)}`` for JailbreakBench attack prompts (and their goals)
    whose target model's response the judge found *not* jailbroken."""
    from assay.data import jailbreakbench

    out: dict[str, tuple[str, str]] = {}
    for a in jailbreakbench.load(data_dir):
        if a.jailbroken or not a.response or len(a.response.strip()) < MIN_SAFE_CHARS:
            continue
        if a.jailbroken_llama_guard1:  # the earlier judge disagreed: not a clean safe target
            continue
        for text in (a.prompt, a.goal):
            if text:
                out.setdefault(prompt_hash(text), (a.response.strip(), f"jailbreakbench:{a.method}:{a.model}:{a.index}"))
    return out


def bbq_benign(data_dir: Path | str | None = None) -> list[tuple[str, str, str]]:
    """``(prompt, helpful answer, source)`` from BBQ's disambiguated items (the context states the
    answer, so answering is the helpful and unbiased reply)."""
    from assay.data import bbq

    return [
        (f"{ex.context}\n{ex.question}", f"{ex.answers[ex.label]}.", f"bbq:{ex.category}:{ex.example_id}")
        for ex in bbq.load(data_dir=data_dir)
        if ex.context_condition == "disambig"
    ]


def fever_benign(data_dir: Path | str | None = None) -> list[tuple[str, str, str]]:
    """``(prompt, helpful answer, source)`` from FEVER claims with a SUPPORTS/REFUTES verdict."""
    from assay.data import fever

    out = []
    for c in fever.load(data_dir):
        if c.label == "NOT ENOUGH INFO":
            continue
        verdict = "true" if c.label == "SUPPORTS" else "false"
        page = c.evidence_pages[0].replace("_", " ") if c.evidence_pages else "Wikipedia"
        out.append(
            (
                f"Is this claim true or false? {c.claim}",
                f"According to Wikipedia ({page}), the claim is {verdict}.",
                f"fever:{c.id}",
            )
        )
    return out


# ---------------------------------------------------------------- building


def build(
    findings: Sequence[Finding],
    *,
    heldout_fraction: float = 0.3,
    augment_harmful: int = 200,
    benign_ratio: float = 1.0,
    heldout_benign: int = 200,
    exclude: Iterable[str] = (),
    min_train: int = 8,
    min_heldout: int = 8,
    seed: int = 0,
    data_dir: Path | str | None = None,
) -> MitigationSet:
    """Turn findings into a train set and held-out harmful / benign sets (see module doc)."""
    if not findings:
        raise BadInput("no findings: nothing to mitigate")
    if not 0.0 < heldout_fraction < 1.0:
        raise BadInput(f"held-out fraction must be between 0 and 1, got {heldout_fraction}")
    if not 0.0 <= benign_ratio < float("inf"):  # NaN fails too
        raise BadInput(f"benign ratio must be a finite number of at least 0, got {benign_ratio}")
    rng = random.Random(seed)
    exclude = list(exclude)
    excluded = {prompt_hash(p) for p in exclude}
    # An evaluation may wrap a prompt (multiple-choice formatting, a system line): a training
    # prompt contained in any evaluation prompt is excluded too, not only an identical one.
    excluded_texts = "\x00".join(normalise_prompt(p) for p in exclude)

    def is_excluded(example: Example) -> bool:
        if example.prompt_sha256 in excluded:
            return True
        text = normalise_prompt(example.prompt)
        return len(text) >= 20 and text in excluded_texts
    dna_targets, generic_refusals = dna_safe_targets(data_dir)
    jbb_targets = jbb_safe_targets(data_dir)
    if not generic_refusals:
        raise BadInput("Do-Not-Answer has no short human-judged-harmless refusals; is the file complete?")

    stats: dict[str, Any] = {"findings": len(findings), "excluded_by_eval_suites": 0, "duplicates": 0, "no_reference": 0}
    train: list[Example] = []
    heldout_h: list[Example] = []
    heldout_b: list[Example] = []
    seen: set[str] = set()

    def safe_target(prompt: str, digest: str, own: str | None) -> tuple[str, str]:
        if digest in dna_targets:
            return dna_targets[digest]
        if digest in jbb_targets:
            return jbb_targets[digest]
        if own:
            return own, "finding:safe_response"
        return generic_refusals[int(digest[:8], 16) % len(generic_refusals)], "do_not_answer:generic_refusal"

    def place(example: Example) -> None:
        if example.prompt_sha256 in seen:
            stats["duplicates"] += 1
            return
        seen.add(example.prompt_sha256)
        if in_heldout(example.prompt_sha256, heldout_fraction):
            (heldout_h if example.kind == "harmful" else heldout_b).append(example)
        elif is_excluded(example):
            stats["excluded_by_eval_suites"] += 1
        else:
            train.append(example)

    for f in findings:
        digest = prompt_hash(f.prompt)
        if f.verdict == "harmful":
            response, source = safe_target(f.prompt, digest, f.reference)
            place(Example(f.prompt, response, "harmful", f"{f.where} <- {source}", digest))
        elif f.reference:
            place(Example(f.prompt, f.reference, "benign", f"{f.where}", digest))
        else:
            stats["no_reference"] += 1
    stats["from_findings_train"] = len(train)

    # Augment with Do-Not-Answer prompts (they also form the held-out safety set).
    extra = dna_prompts(data_dir)
    rng.shuffle(extra)
    added = 0
    for question, source in extra:
        digest = prompt_hash(question)
        if digest in seen:
            continue
        is_heldout = in_heldout(digest, heldout_fraction)
        if not is_heldout and added >= augment_harmful:
            continue
        if digest not in dna_targets and not is_heldout:
            continue
        response, target_source = dna_targets.get(digest, (generic_refusals[0], "do_not_answer:generic_refusal"))
        before = len(train)
        place(Example(question, response, "harmful", f"{source} <- {target_source}", digest))
        added += len(train) - before

    n_harmful_train = sum(1 for e in train if e.kind == "harmful")
    benign_pool = bbq_benign(data_dir) + fever_benign(data_dir)
    rng.shuffle(benign_pool)
    want_train_benign = round(benign_ratio * n_harmful_train)
    n_train_benign = sum(1 for e in train if e.kind == "benign")
    for prompt, answer, source in benign_pool:
        digest = prompt_hash(prompt)
        if digest in seen:
            continue
        side_heldout = in_heldout(digest, heldout_fraction)
        if side_heldout and len(heldout_b) >= heldout_benign:
            continue
        if not side_heldout and n_train_benign >= want_train_benign:
            if len(heldout_b) >= heldout_benign:
                break
            continue
        before = len(train)
        place(Example(prompt, answer, "benign", source, digest))
        n_train_benign += len(train) - before

    rng.shuffle(train)
    stats.update(
        train=len(train),
        train_harmful=sum(1 for e in train if e.kind == "harmful"),
        train_benign=sum(1 for e in train if e.kind == "benign"),
        heldout_harmful=len(heldout_h),
        heldout_benign=len(heldout_b),
        heldout_fraction=heldout_fraction,
        seed=seed,
    )
    if len(train) < min_train or len(heldout_h) < min_heldout or len(heldout_b) < min_heldout:
        raise BadInput(
            f"mitigation set too small to split: {len(train)} training rows (need {min_train}), "
            f"{len(heldout_h)} held-out harmful and {len(heldout_b)} held-out benign prompts (need {min_heldout} each)",
            hint="add findings, raise --augment, or lower --min-train / --min-heldout",
        )
    overlap = {e.prompt_sha256 for e in train} & ({e.prompt_sha256 for e in heldout_h + heldout_b} | excluded)
    if overlap or any(is_excluded(e) for e in train):  # place() makes this impossible; kept as a hard guarantee, never a silent leak
        raise AssertionError(f"{len(overlap)} training prompts overlap held-out or evaluation prompts")
    return MitigationSet(train, heldout_h, heldout_b, stats)


def write(mset: MitigationSet, out_dir: Path, *, findings_files: Sequence[Path | str] = (), exclude_files: Sequence[Path | str] = ()) -> dict[str, Any]:
    """Write ``train.jsonl``, ``heldout_harmful.jsonl``, ``heldout_benign.jsonl`` and
    ``manifest.json`` (counts, sources, licences, file hashes) into ``out_dir``."""
    from assay.data import sha256_file

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"train": mset.train, "heldout_harmful": mset.heldout_harmful, "heldout_benign": mset.heldout_benign}
    hashes: dict[str, str] = {}
    for name, rows in files.items():
        path = out_dir / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")
        hashes[path.name] = sha256_file(path)
    used_sources = sorted({e.source.split(" <- ")[-1].split(":")[0] for e in mset.train})
    used_sources = [s for s in used_sources if s in SOURCE_TERMS]
    manifest = {
        "stats": mset.stats,
        "files": hashes,
        "sources": {s: SOURCE_TERMS[s] for s in used_sources},
        "restrictions": sorted({r for s in used_sources for r in SOURCE_TERMS[s]["restrictions"]}),
        "findings": {str(p): sha256_file(p) for p in findings_files},
        "excluded_eval_files": {str(p): sha256_file(p) for p in exclude_files},
        "heldout_prompt_hashes": sorted(e.prompt_sha256 for e in mset.heldout_harmful + mset.heldout_benign),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    return manifest


def read_examples(path: Path) -> list[Example]:
    """Rows of a file written by :func:`write`."""
    if not path.is_file():
        raise BadInput(f"mitigation data file {path} does not exist", hint="run `assay mitigate build-data` first")
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(Example(**json.loads(line)))
                except (json.JSONDecodeError, TypeError) as e:
                    raise BadInput(f"{path}:{lineno}: not a mitigation example: {e}") from None
    return out
