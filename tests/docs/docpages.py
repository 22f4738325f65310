"""Read README.md and docs/*.md the way the docs tests need them: fenced blocks (with the file
and line they start on, their language and the ``docs-test`` marker before them), inline code
spans, and the ``assay`` command lines among both.

Marker convention (an HTML comment on its own line just before a fence; blank lines between are
fine; invisible when the page is rendered):

    <!-- docs-test: skip (why this block cannot run) -->
    <!-- docs-test: help (why it is only checked through --help, e.g. it starts a model server) -->

A marker without a reason in parentheses is an error: every exception says why.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SHELL_LANGS = {"", "sh", "bash", "shell", "console"}
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>[a-z-]+)\s*(?:\((?P<reason>[^)]+)\))?\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)(?P<lang>[A-Za-z0-9_+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marker: str | None = None  # "skip" | "help" | None
    reason: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def id(self) -> str:
        return f"{self.page.name}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Every fenced block of a page, with the marker (if any) written just before it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    marker: tuple[str, str | None] | None = None
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if m:
            if m["kind"] not in ("skip", "help"):
                raise ValueError(f"{page.name}:{i + 1}: unknown docs-test marker {m['kind']!r} (skip or help)")
            if not m["reason"]:
                raise ValueError(f"{page.name}:{i + 1}: a docs-test marker needs a reason in parentheses")
            marker = (m["kind"], m["reason"].strip())
            i += 1
            continue
        f = FENCE.match(lines[i])
        if f:
            start, fence, indent = i, f["fence"], len(f["indent"])
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
                i += 1
            out.append(Block(page, start + 1, f["lang"].lower(), "\n".join(body) + "\n",
                             marker[0] if marker else None, marker[1] if marker else None))
            marker = None
            i += 1
            continue
        if lines[i].strip():
            marker = None  # a marker applies only to the block right after it
        i += 1
    return out


def all_blocks() -> list[Block]:
    return [b for page in PAGES for b in blocks(page)]


def inline_code(page: Path) -> list[tuple[int, str]]:
    """(line, text) of every inline code span outside fenced blocks."""
    out: list[tuple[int, str]] = []
    in_fence = None
    for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        f = FENCE.match(line)
        if f:
            in_fence = None if in_fence and line.strip().startswith(in_fence) else (in_fence or f["fence"])
            continue
        if in_fence:
            continue
        for m in re.finditer(r"(`+)(.+?)\1", line):
            out.append((n, m.group(2).strip()))
    return out


def shell_lines(block: Block) -> list[tuple[int, str]]:
    """The commands of a shell block: (line, command) with continuations joined, comments kept."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for n, raw in enumerate(block.text.splitlines(), block.line + 1):
        line = raw.rstrip()
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        cmd = (pending + line).strip()
        pending = ""
        if cmd and not cmd.startswith("#"):
            out.append((start, cmd))
    return out


def split_command(cmd: str) -> list[str]:
    """Words of a command, a trailing ``# comment`` dropped."""
    lexer = shlex.shlex(cmd, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*(?:\.[a-z]+)?")


def is_synopsis(words: list[str]) -> bool:
    """A usage line (``[--opt X]``, ``A|B``, ``NAME``, ``...``) rather than a command to run."""
    for w in words:
        if w.startswith(("http://", "https://", "redis://", "postgresql", "{", "'")):
            continue
        if any(c in w for c in "[]|") or "..." in w:
            return True
        value = w.split("=", 1)[1] if w.startswith("--") and "=" in w else w
        if any(PLACEHOLDER.fullmatch(part) for part in value.split(",")):
            return True
    return False
