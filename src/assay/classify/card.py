"""Model cards (Markdown) written from a classifier's metrics document, so the card can never
disagree with the numbers it reports."""

from __future__ import annotations

INTENDED_USE = {
    "toxicity": "Label user-generated text at ingestion so serving rules can drop or demote it; score LLM outputs in evaluation suites.",
    "hate": "Separate hate speech from merely offensive language (the distinction Davidson et al. found annotators and models confuse).",
    "offensive": "Flag profane or insulting language that is not hate speech.",
    "harmful_response": "Score LLM answers to risky prompts in evaluation and red-team runs.",
    "refusal": "Measure refusal rates (and over-refusal) of an LLM under test.",
    "prompt_injection": "Flag user inputs or retrieved content that try to override a model's instructions.",
    "claim_match": "Show a reviewer the nearest already-checked claims (with their verdicts) for a new claim.",
}

LIMITS = {
    "toxicity": "alt-profanity-check was trained on all of Davidson's tweets (its README says so), so on the Davidson test split that baseline is scored on its own training data and beats this head there. Davidson tweets are 2013-era US Twitter sampled by a hate lexicon; the authors later showed the labels are biased against African-American English (arXiv:1905.12516). Scores on other registers (forums, LLM output) are less reliable.",
    "hate": "alt-profanity-check was trained on all of Davidson's tweets, so it is scored on its own training data here. Only 1,430 hate tweets; precision on hate is low, as in the original paper. ToxiGen statements add implicit hate but are few (627). The encoder is fine-tuned on these rows and the project's contrast cases, about 2,300 hand-written sentences on 304 templates: it learns negation and counter-speech from them, and phrasings far from those templates may still fool it (the functional suite, written apart, measures that).",
    "offensive": "alt-profanity-check was trained on all of Davidson's tweets, so it is scored on its own training data here. Offensive vs hate is a fuzzy line in the annotations themselves.",
    "harmful_response": "Two kinds of label: Do-Not-Answer's are human (harm relative to its risky prompts; 193 harmful of 5,634), JailbreakBench's are an LLM judge's jailbroken verdict (57% positive). The sources differ in base rate and style, so the pooled AUROC partly rewards telling the sources apart: read the per-source rows. The head sees only the response (no prompt), cut at its first 32 word pieces (measured better than 64: the opening says whether the model complied): harm that starts later is missed. JailbreakBench responses come from GPT-3.5/4, Llama-2 and Vicuna, whose providers' terms also apply.",
    "refusal": "Refusal = action 0 only; 'I am an AI and cannot know' (action 4) counts as not refusing, as in the paper.",
    "prompt_injection": "CyberSecEval has no benign negatives, so negatives come from other sets (questions, claims, tweets); the head may partly learn 'looks like CyberSecEval'. English only (see the multilingual check).",
    "claim_match": "Matches are by meaning, not truth: a claim that contradicts a checked claim is still 'near' it. FEVER claims are Wikipedia mutations, not real-world misinformation.",
}


def _fmt(entry: dict) -> str:
    lo, hi = entry["ci95"]
    return f"{entry['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def _recipe(config: dict) -> str:
    davidson = "every" if config.get("davidson_rows") is None else f"{config['davidson_rows']:,}"
    return (f"LoRA r={config['rank']} alpha={config['alpha']}, {config['max_tokens']} word pieces, {davidson} Davidson training rows, "
            f"{config['epochs']:g} epochs, batch {config['batch']}, lr {config['lr']:g}, contrast x{config['contrast_repeat']}")


def _validation_row(label: str, v: dict) -> str:
    h = v["heldout_templates"]
    return (f"| {label} | {v['val_auroc']:.4f} | {v['val_auroc_davidson_toxigen']:.4f} | {h['accuracy']} "
            f"| {h['accuracy_hate']} | {h['accuracy_not_hate']} |")


def _soup_seeds(doc: dict) -> str:
    soup = (doc.get("finetune") or {}).get("soup")
    return f"; adapter seeds {','.join(str(s) for s in soup['seeds'])}, `--seeds` when not the recipe's default" if soup else ""


def _soup_lines(ft: dict) -> list[str]:
    """A model-soup adapter: which runs it averages (``finetune.soup``)."""
    soup = ft.get("soup")
    if not soup:
        return []
    runs = "; ".join(f"seed {r['config']['seed']}: `{r['adapter_sha256'][:16]}…`, {r['steps']} steps, {r['seconds']} s, final loss {r.get('final_loss')}"
                     for r in soup["runs"])
    k = len(soup["runs"])
    return [
        f"The adapter is a uniform model soup of {k} runs of that recipe with seeds {', '.join(str(s) for s in soup['seeds'])} (Wortsman et al. 2022):",
        f"the merged weight is `W + mean_i(scaling * B_i @ A_i)`, stored as one LoRA adapter of rank {k} x r, so it is served",
        f"as one encoder (one forward pass). Runs: {runs}.",
    ]


def finetune_section(doc: dict) -> list[str]:
    """The fine-tuned encoder: recipe, adapter hash and the validation figures it was chosen on."""
    ft = doc["finetune"]
    v = ft["validation"]
    h = v["heldout_templates"]
    lines = [
        "",
        "## Fine-tuned encoder",
        "",
        f"The encoder is MiniLM-L6 with a LoRA adapter (sha256 `{ft['adapter_sha256'][:16]}…`, merged into the packaged",
        "weights at load and exported to ONNX once), trained with a linear probe that is then discarded; the head above is",
        "fitted on the fine-tuned embeddings of every training row. Recipe: " + _recipe(ft["config"]) + ".",
        f"{ft['rows']} adapter training rows, {ft['steps']} steps, {ft['seconds']} s; modules: {', '.join(ft['targets'])}.",
        *_soup_lines(ft),
        "",
        f"Chosen on validation only: AUROC on the validation split, on its Davidson + ToxiGen rows, and accuracy on the {h['n']}",
        f"contrast cases of {h['templates']} held-out templates (a hash-chosen quarter of `hate_contrast.jsonl`'s templates,",
        "never trained on by adapter or head). No setting was chosen on the functional test suite; its result for an",
        "earlier recipe (threats missed) prompted the threat templates this one was trained with (docs/classify.md).",
        "The contrast cases calibrate the head but do not set its threshold: that is the best F1 on the other",
        "validation rows.",
        "",
        "| recipe | val AUROC | val AUROC Davidson+ToxiGen | held-out templates acc | on hate | on not-hate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines.append(_validation_row("this head", v))
    lines += ["", "Other recipes and what they measured on the same figures: docs/classify.md (Fine-tuned hate encoder)."]
    return lines


def model_card(doc: dict) -> str:
    name = doc["classifier"]
    lines = [
        f"# Model card: `{name}`",
        "",
        f"{doc['description']}",
        "",
        f"- **Version:** `{doc['version']}`",
        f"- **Encoder:** `{doc['encoder']}` ({'fine-tuned with LoRA, below' if doc.get('finetune') else 'frozen'}), head: {doc.get('head', {}).get('chosen', 'nearest neighbour')}, calibration: {doc.get('calibration', 'n/a')}",
        f"- **Threshold:** {doc['threshold']} (best F1 on the validation split)",
        f"- **Reproduce:** `assay classify train {name}` (seed {doc['seed']}{_soup_seeds(doc)})",
        f"- **Intended use:** {INTENDED_USE.get(name, '')}",
        "",
        "## Data",
        "",
        "| split | rows | positives |",
        "|---|---:|---:|",
    ]
    for split, counts in doc["split"].items():
        lines.append(f"| {split} | {counts['n']} | {counts['positives']} |")
    lines += ["", "Files (sha256; the full list is in the metrics JSON):", ""]
    by_folder: dict[str, list[tuple[str, str]]] = {}
    for path, digest in sorted(doc.get("data", {}).items()):
        by_folder.setdefault(path.split("/")[0], []).append((path, digest))
    for folder, files in by_folder.items():
        if len(files) <= 2:
            lines += [f"- `{path}` `{digest[:16]}…`" for path, digest in files]
        else:
            lines.append(f"- `{folder}/`: {len(files)} files")
    lines += [
        "",
        "## Test-split metrics (95% intervals: Wilson for precision and recall, bootstrap for F1 and AUROC)",
        "",
        "| system | precision | recall | F1 | AUROC | threshold |",
        "|---|---|---|---|---|---:|",
    ]
    for system, m in doc["test"].items():
        lines.append(f"| {system} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['f1'])} | {_fmt(m['auroc'])} | {m['threshold']:.3f} |")
    if "ece" in doc["test"].get("model", {}):
        lines += ["", f"Expected calibration error of the model on the test split: {doc['test']['model']['ece']}."]
    if doc.get("test_by_source"):
        lines += ["", "By source (test split):", ""]
        for source, entry in doc["test_by_source"].items():
            lines.append(f"- {source}: " + ", ".join(f"{k} {v}" for k, v in entry.items()))
    if doc.get("retrieval"):
        lines += ["", "Retrieval on the test queries that have a checked counterpart:", ""]
        lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in doc["retrieval"].items()]
    obf = doc.get("obfuscation") or {}
    kinds = {k: v for k, v in obf.items() if k not in ("clean", "sample") and isinstance(v, dict)}
    if kinds:
        columns = list(next(iter(kinds.values())))
        clean = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in obf.get("clean", {}).items())
        lines += [
            "",
            "## Evasion: obfuscated test texts, with and without normalisation",
            "",
            f"Sample: {obf.get('sample', {})}. Clean text: {clean}.",
            "",
            "| obfuscation | " + " | ".join(c.replace("_", " ") for c in columns) + " |",
            "|---|" + "---:|" * len(columns),
        ]
        for kind, row in kinds.items():
            lines.append(f"| {kind} | " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    elif obf.get("skipped"):
        lines += ["", f"Evasion: not measured ({obf['skipped']})."]
    if doc.get("checks"):
        lines += ["", "## Checks on data never trained on", ""]
        for check, body in doc["checks"].items():
            lines.append(f"- **{check}**: {body.get('what', '')}")
            if "metrics" in body:
                for system, m in body["metrics"].items():
                    lines.append(f"  - {system}: precision {_fmt(m['precision'])}, recall {_fmt(m['recall'])}, AUROC {_fmt(m['auroc'])}")
            if "recall" in body:
                lines.append(f"  - recall {body['recall']}")
            if "agreement" in body:
                lines.append(f"  - agreement {body['agreement']}")
    if doc.get("finetune"):
        lines += finetune_section(doc)
    if doc.get("test_int8"):
        q = doc["test_int8"]
        m, a = q["metrics"], q["agreement_with_fp32"]
        lines += [
            "",
            "## Served with the int8 encoder",
            "",
            "Scoring runs the encoder dynamically quantised to int8 (2-3x the fp32 speed on this",
            f"machine); the head above was trained and calibrated on fp32 embeddings. Test split again, `{q['encoder']}`:",
            "",
            f"- precision {_fmt(m['precision'])}, recall {_fmt(m['recall'])}, F1 {_fmt(m['f1'])}, AUROC {_fmt(m['auroc'])}, ECE {m.get('ece')}",
            f"- against fp32 scores: median |difference| {a['score_abs_diff_median']}, 99th percentile {a['score_abs_diff_p99']}, "
            f"max {a['score_abs_diff_max']}; same label for {a['label_agreement']:.2%} of test texts",
            "- `ASSAY_CLASSIFY_PRECISION=fp32` serves the fp32 encoder instead.",
        ]
    lines += ["", "## Limits", "", LIMITS.get(name, ""), "", "Content warning: the training data contains hateful and harmful text; none is reproduced here.", ""]
    return "\n".join(lines)
