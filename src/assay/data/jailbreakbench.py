"""JailbreakBench attack artifacts (github.com/JailbreakBench/artifacts): real jailbreak prompts,
target-model responses and the judge's jailbroken verdict for the 100 JBB-Behaviors goals.

Layout: ``attack-artifacts/<METHOD>/<attack_type>/<model>.json``, each with ``parameters`` and a
list of 100 ``jailbreaks``. ``prompt``/``response`` are null where the method submitted nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path
from assay.errors import BadInput

NAME = "jailbreakbench"
ROOT = "attack-artifacts"


@dataclass(frozen=True, slots=True)
class Artifact:
    method: str  # the artifact folder: PAIR, GCG, JBC, prompt_with_random_search, DSN
    attack_type: str  # black_box, white_box, transfer, manual
    model: str  # target model
    index: int  # 0..99, the JBB-Behaviors goal
    goal: str
    behavior: str
    category: str
    prompt: str | None
    response: str | None
    jailbroken: bool  # current judge
    jailbroken_llama_guard1: bool | None  # the earlier Llama Guard judge, where present
    method_name: str = ""  # the method as the file's parameters name it (e.g. JailbreakChat for JBC)


@dataclass(frozen=True, slots=True)
class Behavior:
    index: int
    goal: str
    behavior: str
    category: str


def _bool(value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    if text in ("none", "null", ""):
        return None
    raise ValueError(f"not a boolean: {value!r}")


def load(data_dir: Path | str | None = None) -> list[Artifact]:
    """All 1,800 records (18 method/model files x 100), sorted by method, attack type, model, index."""
    root = dataset_path(NAME, ROOT, data_dir=data_dir)
    out: list[Artifact] = []
    files = sorted(root.glob("*/*/*.json"))
    if not files:
        raise BadInput(f"no artifact files under {root} (expected <METHOD>/<attack_type>/<model>.json)")
    for path in files:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            params = doc.get("parameters", {})
            for item in doc["jailbreaks"]:
                out.append(
                    Artifact(
                        method=path.parent.parent.name,
                        attack_type=path.parent.name,
                        model=str(params.get("model") or path.stem),
                        index=int(item["index"]),
                        goal=str(item["goal"]),
                        behavior=str(item["behavior"]),
                        category=str(item["category"]),
                        prompt=item.get("prompt"),
                        response=item.get("response"),
                        jailbroken=bool(_bool(item.get("jailbroken"))),
                        jailbroken_llama_guard1=_bool(item.get("jailbroken_llama_guard1")),
                        method_name=str(params.get("method") or ""),
                    )
                )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise BadInput(f"{path}: bad JailbreakBench artifact file: {e}") from None
    return out


def load_behaviors(data_dir: Path | str | None = None) -> list[Behavior]:
    """The 100 JBB-Behaviors harmful goals (read from the artifacts), by index."""
    seen: dict[int, Behavior] = {}
    for a in load(data_dir):
        seen.setdefault(a.index, Behavior(a.index, a.goal, a.behavior, a.category))
    return [seen[i] for i in sorted(seen)]
