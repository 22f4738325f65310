"""Meta CyberSecEval textual prompt-injection cases (github.com/meta-llama/PurpleLlama,
``CybersecurityBenchmarks/datasets/prompt_injection/``).

Every case is an injection attempt (no benign negatives): a system prompt with a rule or secret
(``test_case_prompt``), the attack (``user_input``), and a yes/no ``judge_question`` where "yes"
means the injection succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path, read
from assay.errors import BadInput

NAME = "cyberseceval"
ENGLISH_FILE = "prompt_injection.json"
MULTILINGUAL_FILE = "prompt_injection_multilingual_machine_translated.json"
FIELDS = (
    "prompt_id",
    "test_case_prompt",
    "user_input",
    "judge_question",
    "injection_variant",
    "injection_type",
    "risk_category",
    "speaking_language",
)
CHOICES = {"injection_type": ("direct", "indirect"), "risk_category": ("security-violating", "logic-violating")}


@dataclass(frozen=True, slots=True)
class InjectionCase:
    prompt_id: int
    test_case_prompt: str  # the system prompt the model should follow
    user_input: str  # the injection attempt (direct) or untrusted content carrying it (indirect)
    judge_question: str  # "yes" = injection succeeded
    injection_variant: str  # technique, e.g. ignore_previous_instructions
    injection_type: str  # direct | indirect
    risk_category: str  # security-violating | logic-violating
    speaking_language: str


def load(multilingual: bool = False, data_dir: Path | str | None = None) -> list[InjectionCase]:
    """The 251 English cases, or the 1,004 machine-translated ones with ``multilingual=True``."""
    path = dataset_path(NAME, MULTILINGUAL_FILE if multilingual else ENGLISH_FILE, data_dir=data_dir)
    items = read.json_file(path, "CyberSecEval prompt-injection cases")
    if not isinstance(items, list):
        raise BadInput(f"{path}: expected a JSON list of test cases")
    out = []
    for i, item in enumerate(items):
        where = f"{path}: item {i}"
        if not isinstance(item, dict):
            raise BadInput(f"{where}: expected an object, got {type(item).__name__}")
        read.fields(item, where, "CyberSecEval test case", FIELDS)
        out.append(InjectionCase(
            prompt_id=read.whole(item["prompt_id"], where, "prompt_id"),
            **{f: read.string(item[f], where, f) for f in FIELDS if f not in ("prompt_id", *CHOICES)},
            **{f: read.choice(item[f], where, f, allowed) for f, allowed in CHOICES.items()},
        ))
    read.unique(((f"{path}: item {i}", c.prompt_id) for i, c in enumerate(out)), "prompt_id")
    return read.some(out, str(path), "test cases")
