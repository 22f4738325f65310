"""JailbreakBench attack artifacts (github.com/JailbreakBench/artifacts): real jailbreak prompts,
target-model responses and the judge's jailbroken verdict for the 100 JBB-Behaviors goals.

Layout: ``attack-artifacts/<METHOD>/<attack_type>/<model>.json``, each with ``parameters`` and a
list of 100 ``jailbreaks``. ``prompt``/``response`` are null where the method submitted nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path, read
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


def _bool(value: object, where: str, field: str, *, required: bool) -> bool | None:
    """A verdict: JSON true/false (or the strings "true"/"false"); null only where not ``required``
    (a missing verdict is never read as "not jailbroken")."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in ("true", "false"):
        return text == "true"
    if value is None and not required:
        return None
    raise BadInput(f"{where}: {field} must be true or false, got {value!r}"[:300])


def _optional_text(value: object, where: str, field: str) -> str | None:
    return None if value is None else read.string(value, where, field, empty=True)


def load(data_dir: Path | str | None = None) -> list[Artifact]:
    """All 1,800 records (18 method/model files x 100), sorted by method, attack type, model, index."""
    root = dataset_path(NAME, ROOT, data_dir=data_dir)
    out: list[Artifact] = []
    files = sorted(root.glob("*/*/*.json"))
    if not files:
        raise BadInput(f"no artifact files under {root} (expected <METHOD>/<attack_type>/<model>.json)")
    for path in files:
        doc = read.json_file(path, "JailbreakBench artifact file")
        if not isinstance(doc, dict) or not isinstance(doc.get("jailbreaks"), list) or not isinstance(doc.get("parameters", {}), dict):
            raise BadInput(f"{path}: bad JailbreakBench artifact file: expected an object with a 'jailbreaks' list and 'parameters'")
        params = doc.get("parameters", {})
        before = len(out)
        for i, item in enumerate(doc["jailbreaks"]):
            where = f"{path}: jailbreaks[{i}]"
            if not isinstance(item, dict):
                raise BadInput(f"{where}: expected an object")
            read.fields(item, where, "bad JailbreakBench artifact", ("index", "goal", "behavior", "category", "jailbroken"))
            out.append(
                Artifact(
                    method=path.parent.parent.name,
                    attack_type=path.parent.name,
                    model=str(params.get("model") or path.stem),
                    index=read.whole(item["index"], where, "index", lo=0),
                    goal=read.string(item["goal"], where, "goal"),
                    behavior=read.string(item["behavior"], where, "behavior"),
                    category=read.string(item["category"], where, "category"),
                    prompt=_optional_text(item.get("prompt"), where, "prompt"),
                    response=_optional_text(item.get("response"), where, "response"),
                    jailbroken=bool(_bool(item["jailbroken"], where, "jailbroken", required=True)),
                    jailbroken_llama_guard1=_bool(item.get("jailbroken_llama_guard1"), where, "jailbroken_llama_guard1", required=False),
                    method_name=str(params.get("method") or ""),
                )
            )
        read.some(out[before:], str(path), "jailbreaks")
        read.unique(((f"{path}: jailbreaks[{i}]", a.index) for i, a in enumerate(out[before:])), "index")
    return out


def load_behaviors(data_dir: Path | str | None = None) -> list[Behavior]:
    """The 100 JBB-Behaviors harmful goals (read from the artifacts), by index."""
    seen: dict[int, Behavior] = {}
    for a in load(data_dir):
        seen.setdefault(a.index, Behavior(a.index, a.goal, a.behavior, a.category))
    return [seen[i] for i in sorted(seen)]
