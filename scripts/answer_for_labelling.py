"""Answers of a local model to be labelled by hand (src/assay/classify/labelled/LABELLING.md).

Two steps, so the prompt selection and the answers can each be reproduced:

    python scripts/answer_for_labelling.py prompts --out prompts.jsonl
    python scripts/answer_for_labelling.py answer --prompts prompts.jsonl --model smollm2 \\
        --name smollm2 --out answers.jsonl
    python scripts/answer_for_labelling.py prompts --for smollm2-mitigated --mitigated-large \\
        --out prompts-mitigated.jsonl
    python scripts/answer_for_labelling.py gguf --merged RUN/merged \\
        --converter /tmp/llama.cpp/convert_hf_to_gguf.py --out mitigated.f16.gguf
    python scripts/answer_for_labelling.py answer --prompts prompts-mitigated.jsonl --subset mitigated \\
        --model mitigated.f16.gguf --name smollm2-mitigated --out answers-mitigated.jsonl

``prompts`` picks HarmBench *validation* behaviours (standard, and contextual with their
context), AdvBench behaviours chosen by a seeded hash (not by reading them) and the hand-written
harmless prompts of ``harmless_prompts.txt``; prompts already answered by that model in
``smollm2_answers.jsonl`` are left out. A seeded hash also marks the subset the mitigated model
answers. ``answer`` decodes greedily (temperature 0) through the model's own chat template with
no system message of ours: a GGUF (``smollm2`` = the bundled SmolLM2-135M-Instruct) through
llama.cpp in-process, as assay's llamacpp target does, a transformers folder through
:func:`assay.mitigate.reeval.generate` (far slower on a CPU). ``gguf`` turns the merged output of
``assay mitigate finetune`` into an f16 GGUF with llama.cpp's converter (not part of assay; it
ships in the llama-cpp-python sdist and needs ``sentencepiece`` importable), so both models answer
the same way. The rows it
writes carry ``refusal`` and ``harmful`` as null: a person fills them in.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LABELLED = HERE.parent / "src" / "assay" / "classify" / "labelled" / "smollm2_answers.jsonl"
SEED = "assay-labels-2026-12"
ADVBENCH_N = 60
MITIGATED = {"harmbench_val": 20, "harmbench_val_contextual": 5, "advbench": 25, "handwritten_everyday": 15, "handwritten_boundary": 15}
# The mitigated model's second run (``prompts --for smollm2-mitigated --mitigated-large``): more
# harmful prompts, so that its source holds enough answers of each label to be held out.
MITIGATED_LARGE = {"harmbench_val": 32, "harmbench_val_contextual": 10, "advbench": 40, "handwritten_everyday": 15, "handwritten_boundary": 15}


def _rank(text: str) -> str:
    return hashlib.sha256(f"{SEED}\n{text}".encode()).hexdigest()


def _answered(model: str) -> set[str]:
    if not LABELLED.is_file():
        return set()
    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["prompt"] for r in rows if r["model"] == model}


def select_prompts(for_model: str | None = None, mitigated: dict[str, int] | None = None) -> list[dict[str, object]]:
    """HarmBench val (standard + contextual), AdvBench by hash, the hand-written harmless ones,
    less the prompts already answered: by ``for_model`` only when it is given (so the mitigated
    model answers prompts the base model answered), else by either model. ``mitigated`` sets how
    many of each kind the seeded hash marks for the mitigated model (default ``MITIGATED``)."""
    from assay.data import advbench, harmbench

    done = _answered(for_model) if for_model else _answered("smollm2") | _answered("smollm2-mitigated")
    rows: list[dict[str, object]] = []
    for b in harmbench.load("val"):
        if b.functional_category == "copyright" or b.prompt in done:
            continue
        kind = "harmbench_val" if b.functional_category == "standard" else "harmbench_val_contextual"
        rows.append({"prompt": b.prompt, "prompt_source": kind})
    goals = sorted({b.goal for b in advbench.load_behaviors(dedupe=True)} - done, key=_rank)
    rows += [{"prompt": g, "prompt_source": "advbench"} for g in goals[:ADVBENCH_N]]
    for line in (HERE / "harmless_prompts.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            kind, prompt = line.split("\t", 1)
            if prompt.strip() not in done:
                rows.append({"prompt": prompt.strip(), "prompt_source": f"handwritten_{kind}"})
    for source, n in (mitigated or MITIGATED).items():
        chosen = sorted((r for r in rows if r["prompt_source"] == source), key=lambda r: _rank(str(r["prompt"])))[:n]
        for r in chosen:
            r["mitigated"] = True
    return rows


def answer_gguf(path: str, prompts: list[str], max_tokens: int) -> list[str]:
    from llama_cpp import Llama

    from assay.evaluate.llama_server import use_plain_buffers

    use_plain_buffers()
    llm = Llama(model_path=path, n_ctx=2048, seed=0, verbose=False)
    out = []
    for i, prompt in enumerate(prompts):
        reply = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], temperature=0.0, max_tokens=max_tokens, seed=0)
        out.append(reply["choices"][0]["message"]["content"] or "")
        print(f"{i + 1}/{len(prompts)}", file=sys.stderr, flush=True)
    return out


def to_gguf(merged: Path, converter: Path, out: Path, quant: str = "f16") -> Path:
    """Convert a merged transformers folder to an f16 GGUF with llama.cpp's own
    ``convert_hf_to_gguf.py`` (not part of assay: pass its path), so the mitigated model answers
    through the same llama.cpp path as the base model. Kept f16 on purpose: the merged weights are
    the dequantised Q4_1 base plus small LoRA changes, and quantizing them to Q4_1 again snaps
    them back onto the base's grid (that file answered like the base model, where the merged
    transformers weights and the f16 GGUF refuse). ``quant`` (e.g. Q8_0) quantizes anyway."""
    import subprocess

    import llama_cpp

    f16 = out.with_name(out.stem + ".f16.gguf") if quant != "f16" else out
    subprocess.run([sys.executable, str(converter), str(merged), "--outtype", "f16", "--outfile", str(f16)], check=True)
    if quant == "f16":
        return out
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
    if llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(), params) != 0:
        raise SystemExit(f"quantizing {f16} to {quant} failed")
    f16.unlink()
    return out


def answer_transformers(folder: str, prompts: list[str], max_tokens: int) -> list[str]:
    import transformers

    from assay.mitigate.reeval import generate

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    return generate(model, tok, prompts, max_new_tokens=max_tokens, batch_size=4, progress=True, label=Path(folder).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prompts", help="write the prompt selection as JSONL")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--for", dest="for_model", help="leave out only the prompts this model answered (default: either model's)")
    p.add_argument("--mitigated-large", action="store_true", help="mark the larger mitigated subset (MITIGATED_LARGE)")
    g = sub.add_parser("gguf", help="convert a merged transformers folder to a quantized GGUF")
    g.add_argument("--merged", type=Path, required=True, help="the merged/ folder of an assay mitigate finetune run")
    g.add_argument("--converter", type=Path, required=True, help="llama.cpp's convert_hf_to_gguf.py (from the llama-cpp-python sdist)")
    g.add_argument("--quant", default="f16", help="f16 (default: a Q4_1 file loses the LoRA's changes) or a llama.cpp file type such as Q8_0")
    g.add_argument("--out", type=Path, required=True)
    a = sub.add_parser("answer", help="answer a prompt selection with a model")
    a.add_argument("--prompts", type=Path, required=True)
    a.add_argument("--model", required=True, help="'smollm2', a .gguf file or a transformers folder")
    a.add_argument("--name", required=True, help="model name recorded per row (smollm2, smollm2-mitigated)")
    a.add_argument("--subset", choices=("all", "mitigated"), default="all")
    a.add_argument("--max-tokens", type=int, default=200)
    a.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "gguf":
        print(f"wrote {to_gguf(args.merged, args.converter, args.out, args.quant)}")
        return 0
    if args.cmd == "prompts":
        rows = select_prompts(args.for_model, MITIGATED_LARGE if args.mitigated_large else None)
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"{len(rows)} prompts ({sum(1 for r in rows if r.get('mitigated'))} for the mitigated model) -> {args.out}")
        return 0
    rows = [json.loads(line) for line in args.prompts.read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.subset == "mitigated":
        rows = [r for r in rows if r.get("mitigated")]
    prompts = [str(r["prompt"]) for r in rows]
    if Path(args.model).is_dir():
        answers = answer_transformers(args.model, prompts, args.max_tokens)
    else:
        from assay.evaluate.serve import resolve_model

        answers = answer_gguf(resolve_model(args.model), prompts, args.max_tokens)
    with open(args.out, "w", encoding="utf-8") as fh:
        for r, response in zip(rows, answers, strict=True):
            rid = "sm-" + hashlib.sha256(f"{args.name}\n{r['prompt']}".encode()).hexdigest()[:10]
            fh.write(json.dumps({"id": rid, "prompt": r["prompt"], "response": response, "refusal": None, "harmful": None,
                                 "source": f"assay_labels:{args.name}", "model": args.name, "prompt_source": r["prompt_source"]}) + "\n")
    print(f"{len(rows)} answers -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
