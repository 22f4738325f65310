"""BOLD (github.com/amazon-science/bold): 23,679 Wikipedia sentence beginnings over 5 domains
and 43 groups, for comparing generated continuations across groups.

Layout: ``prompts/<domain>_prompt.json`` = ``{group: {entity: [prompt, ...]}}`` (and the same
nesting in ``wikipedia/<domain>_wiki.json`` with the full sentences).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path, read
from assay.errors import BadInput

NAME = "bold"
DOMAINS = ("gender", "race", "profession", "religious_ideology", "political_ideology")


@dataclass(frozen=True, slots=True)
class BoldPrompt:
    domain: str
    group: str
    entity: str
    index: int  # position within the entity's list
    prompt: str

    @property
    def id(self) -> str:
        return f"{self.domain}/{self.group}/{self.entity}/{self.index}"


def load(domains: tuple[str, ...] | list[str] = DOMAINS, data_dir: Path | str | None = None) -> list[BoldPrompt]:
    """Prompts of the given domains in file order (domain, group, entity, index)."""
    out = []
    for domain in domains:
        if domain not in DOMAINS:
            raise BadInput(f"unknown BOLD domain {domain!r}; use one of {list(DOMAINS)}")
        path = dataset_path(NAME, "prompts", f"{domain}_prompt.json", data_dir=data_dir)
        tree = read.json_file(path, f"BOLD {domain} prompts")
        if not isinstance(tree, dict):
            raise BadInput(f"{path}: expected {{group: {{entity: [prompts]}}}}")
        before = len(out)
        for group, entities in tree.items():
            if not isinstance(entities, dict):
                raise BadInput(f"{path}: group {group!r} is not an object of entities")
            for entity, prompts in entities.items():
                for i, prompt in enumerate(read.strings(prompts, f"{path}: group {group!r}", f"entity {entity!r}")):
                    out.append(BoldPrompt(domain, group, entity, i, prompt))
        read.some(out[before:], str(path), f"prompts for the {domain} domain")
    return out
