"""ToxiGen human-written demonstration statements and prompt seeds (github.com/microsoft/TOXIGEN).

Official layout: ``demonstrations/<attribute>/<hate|neutral>_<group>[_sentences].txt`` (one
statement a line) and ``prompts/<hate|neutral>_<group>_1k.txt`` (one few-shot prompt a line,
statements separated by a literal backslash-n and a leading ``-``). The label is in the file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path, read
from assay.errors import BadInput

NAME = "toxigen"


@dataclass(frozen=True, slots=True)
class Statement:
    """One demonstration statement; ``is_hate`` comes from the file name (hate_* vs neutral_*)."""

    text: str
    is_hate: bool
    group: str  # e.g. "mental_disability", "muslim"
    attribute: str  # folder: disability, nationality, race, religion, sexual_orientation
    source_file: str  # path relative to the dataset folder


@dataclass(frozen=True, slots=True)
class Prompt:
    """One few-shot prompt seed: the example statements it lists."""

    statements: tuple[str, ...]
    is_hate: bool
    group: str
    source_file: str


def _parse_name(path: Path) -> tuple[bool, str]:
    """(is hate, group) from ``hate_<group>...`` / ``neutral_<group>...``: the label is in the file
    name, so a file named otherwise is refused, never read as neutral."""
    kind, _, group = path.stem.partition("_")
    for suffix in ("_sentences", "_1k"):
        if group.endswith(suffix):
            group = group[: -len(suffix)]
    if kind not in ("hate", "neutral") or not group:
        raise BadInput(f"{path}: a ToxiGen file must be named hate_<group>... or neutral_<group>...; "
                       "the label comes from the name", hint="move other files out of the dataset folder")
    return kind == "hate", group


def load_demonstrations(data_dir: Path | str | None = None) -> list[Statement]:
    """The 627 demonstration statements (30 files), in sorted file order."""
    root = dataset_path(NAME, "demonstrations", data_dir=data_dir)
    out: list[Statement] = []
    for path in sorted(root.glob("*/*.txt")):
        is_hate, group = _parse_name(path)
        rel = str(path.relative_to(root.parent))
        for _, text in read.lines(path, "ToxiGen demonstrations"):
            out.append(Statement(text=text, is_hate=is_hate, group=group, attribute=path.parent.name, source_file=rel))
    return read.some(out, str(root), "demonstration files (<attribute>/<hate|neutral>_<group>*.txt)")


def load_prompts(data_dir: Path | str | None = None) -> list[Prompt]:
    """The 31,000 prompt seeds (31 files x 1,000 lines)."""
    root = dataset_path(NAME, "prompts", data_dir=data_dir)
    out: list[Prompt] = []
    for path in sorted(root.glob("*.txt")):
        is_hate, group = _parse_name(path)
        rel = str(path.relative_to(root.parent))
        for _, line in read.lines(path, "ToxiGen prompts"):
            parts = [p.strip().lstrip("-").strip() for p in line.split("\\n")]
            out.append(Prompt(statements=tuple(p for p in parts if p), is_hate=is_hate, group=group, source_file=rel))
    return read.some(out, str(root), "prompt files (<hate|neutral>_<group>_1k.txt)")
