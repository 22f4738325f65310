"""Reading YAML with positions, so every error names ``file:line:column`` and shows the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from assay.errors import LocatedError, Location


class PolicyError(LocatedError):
    """A bundle that cannot be loaded. Nothing of it is used."""


class SourceFile:
    """One YAML file of a bundle: its text (for marking the offending line) and parsed tree."""

    def __init__(self, path: Path, text: str, tree: Any):
        self.path = path
        self.text = text
        self.lines = text.splitlines()
        self.tree = tree

    @property
    def name(self) -> str:
        return str(self.path)

    def line_text(self, line: int) -> str | None:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else None

    def error(self, message: str, line: int, column: int, hint: str | None = None) -> PolicyError:
        return PolicyError(message, Location(self.name, line, column), self.line_text(line), hint=hint)

    # ruamel positions are 0-based; ours are 1-based.
    def at_key(self, mapping: CommentedMap, key: str, message: str, hint: str | None = None) -> PolicyError:
        try:
            line, col = mapping.lc.key(key)
        except (KeyError, AttributeError, TypeError):
            line, col = _node_pos(mapping)
        return self.error(message, line + 1, col + 1, hint)

    def at_value(self, mapping: CommentedMap, key: str, message: str, hint: str | None = None) -> PolicyError:
        try:
            line, col = mapping.lc.value(key)
        except (KeyError, AttributeError, TypeError):
            return self.at_key(mapping, key, message, hint)
        return self.error(message, line + 1, col + 1, hint)

    def at_item(self, seq: CommentedSeq, index: int, message: str, hint: str | None = None) -> PolicyError:
        try:
            line, col = seq.lc.item(index)
        except (KeyError, AttributeError, TypeError, IndexError):
            line, col = _node_pos(seq)
        return self.error(message, line + 1, col + 1, hint)

    def at_node(self, node: Any, message: str, hint: str | None = None) -> PolicyError:
        line, col = _node_pos(node)
        return self.error(message, line + 1, col + 1, hint)

    def value_start(self, mapping: CommentedMap, key: str) -> tuple[int, int, str]:
        """1-based (line, column) where a scalar value's text starts, and its quoting style:
        '' plain, '"' or "'" quoted, '|' or '>' block."""
        line, col = mapping.lc.value(key)
        raw = self.line_text(line + 1) or ""
        style = raw[col] if col < len(raw) else ""
        if style in "\"'":
            return line + 1, col + 2, style
        if style in "|>":
            # block scalar: content starts on the next line at its indentation
            nxt = self.line_text(line + 2) or ""
            indent = len(nxt) - len(nxt.lstrip(" "))
            return line + 2, indent + 1, style
        return line + 1, col + 1, ""


def _node_pos(node: Any) -> tuple[int, int]:
    lc = getattr(node, "lc", None)
    if lc is not None and lc.line is not None:
        return lc.line, lc.col or 0
    return 0, 0


def read_yaml(path: Path) -> SourceFile:
    """Parse one YAML file, turning any YAML error into a located ``PolicyError``."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PolicyError(f"cannot read policy file: {e.strerror}", Location(str(path), 1, 1)) from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise PolicyError("policy file is not valid UTF-8", Location(str(path), line, col)) from e
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = e.problem or e.context or "malformed YAML"
        src = SourceFile(path, text, None)
        raise src.error(f"malformed YAML: {problem}", line, col) from e
    except YAMLError as e:
        raise PolicyError(f"malformed YAML: {e}", Location(str(path), 1, 1)) from e
    except Exception as e:  # ruamel raises assorted errors on pathological input
        raise PolicyError(f"malformed YAML: {type(e).__name__}: {e}", Location(str(path), 1, 1)) from e
    return SourceFile(path, text, tree)
