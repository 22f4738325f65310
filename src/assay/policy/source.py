"""Reading YAML with positions, so every error names ``file:line:column`` and shows the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from assay.config import int_setting
from assay.errors import LocatedError, Location
from assay.files import FileRefused, read_regular

MAX_BYTES = 1 << 20  # one policy file, and a whole bundle
MAX_NODES = 100_000  # values after alias expansion
MAX_DEPTH = 64


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


def max_bytes() -> int:
    """The most bytes a policy file, and a whole bundle, may hold (``ASSAY_POLICY_MAX_BYTES``)."""
    return int_setting("ASSAY_POLICY_MAX_BYTES", MAX_BYTES)


def read_bounded(path: Path, budget: int | None = None, *, total: int | None = None, what: str = "policy file") -> bytes:
    """The bytes of a regular policy file of at most ``budget`` bytes (default ``max_bytes()``;
    ``assay.files.read_regular``: a FIFO or a device is refused at once). A larger file is refused
    at the line and column where it crosses the limit (with ``total``, the limit is on a whole
    bundle of which ``budget`` bytes are left). ``what`` names the file in errors."""
    budget = max_bytes() if budget is None else budget
    try:
        return read_regular(path, budget)
    except FileRefused as e:
        if e.data is None:
            raise PolicyError(f"{what}: {e.message}", Location(str(path), 1, 1)) from None
        message = f"{what} is larger than the limit of {budget} bytes" if total is None else \
            f"the bundle's files together are larger than the limit of {total} bytes"
        raise PolicyError(message, Location.of_offset(str(path), e.data, budget),
                          hint="make it smaller, or raise ASSAY_POLICY_MAX_BYTES") from None


def read_yaml(path: Path, budget: int | None = None, *, total: int | None = None, what: str = "policy file") -> SourceFile:
    """Parse one YAML file (at most ``budget`` bytes), turning any YAML error into a located
    ``PolicyError``; its aliases may expand to at most ``ASSAY_POLICY_MAX_NODES`` values nested at
    most ``MAX_DEPTH`` deep (``check_expansion``). Evaluation suites are read with it too."""
    raw = read_bounded(path, budget, total=total, what=what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError(f"{what} is not valid UTF-8", Location.of_offset(str(path), raw, e.start)) from e
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path | str) -> SourceFile:
    """``text`` (the content of ``path``) parsed as YAML with positions, bounded as ``read_yaml``
    says; every failure is a ``PolicyError`` at its line and column."""
    path = Path(path)
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
        raise PolicyError(f"malformed YAML: {type(e).__name__}: {str(e)[:200]}", Location(str(path), 1, 1)) from e
    src = SourceFile(path, text, tree)
    check_expansion(src)
    return src


def check_expansion(src: SourceFile) -> None:
    """Refuse a tree whose aliases expand beyond the limits (a "billion laughs"), refer to
    themselves, or nest too deep, at the place of the offending node.

    Each node's expanded size (values, characters of text, height) is computed once: shared
    nodes are what aliases make, so this costs time in the number of distinct nodes, not in the
    size of the expansion.
    """
    max_nodes = int_setting("ASSAY_POLICY_MAX_NODES", MAX_NODES)
    max_chars = 8 * max_bytes()
    sizes: dict[int, tuple[int, int, int]] = {}  # id -> (values, characters, height)
    open_nodes: set[int] = set()
    stack: list[tuple[Any, Any, bool]] = [(src.tree, None, False)]  # (node, parent, children pushed?)
    while stack:
        node, parent, expanded = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        key = id(node)
        if not expanded:
            if key in sizes:
                continue
            if key in open_nodes:
                raise src.at_node(node if getattr(node, "lc", None) else parent,
                                  "a YAML alias refers to a node that contains it (a recursive alias)")
            open_nodes.add(key)
            stack.append((node, parent, True))
            stack.extend((child, node, False) for child in _children(node))
            continue
        open_nodes.discard(key)
        values, chars, height = 1, 0, 1
        for child in _children(node):
            if isinstance(child, (dict, list)):
                v, c, h = sizes[id(child)]
            else:
                v, c, h = 1, len(child) if isinstance(child, str) else 0, 0
            values, chars, height = values + v, chars + c, max(height, h + 1)
        if isinstance(node, dict):
            chars += sum(len(k) for k in node if isinstance(k, str))
        if values > max_nodes or chars > max_chars:
            raise src.at_node(node, f"this node expands to more than {max_nodes} values or {max_chars} characters "
                                    "through YAML aliases", hint="write the values out, or raise ASSAY_POLICY_MAX_NODES")
        if height > MAX_DEPTH:
            raise src.at_node(node, f"the policy nests deeper than {MAX_DEPTH} levels here")
        sizes[key] = (values, chars, height)


def _children(node: dict | list) -> list[Any]:
    return list(node.values()) if isinstance(node, dict) else list(node)
