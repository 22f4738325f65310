"""Loading a policy bundle: YAML (one file or a folder) -> validated, type-checked, compiled.

Loading is all-or-nothing: any error raises a located ``PolicyError`` and nothing is returned.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import rfc8785
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from assay.config import flag_setting
from assay.errors import Location
from assay.policy.model import (
    DEFAULT_MIN_N,
    DEFAULT_ON_MISSING,
    GATE_DECIDE,
    SECTIONS,
    Action,
    Alert,
    Condition,
    Gate,
    MitigationCall,
    Purpose,
    Rule,
    TestCase,
)
from assay.policy.source import PolicyError, SourceFile, max_bytes, read_yaml
from assay.policy.types import AttrType, parse_type

TOP_KEYS = ("bundle", "version", "description", "requires_signature", "attributes", *SECTIONS, "tests")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_ACTION_RE = re.compile(r"^\s*(\w+)\s*(?:\((.*)\))?\s*$", re.S)
_CALL_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.S)
_CEL_ERR = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")


@dataclass(frozen=True)
class CompiledCondition:
    """A condition compiled and type-checked by the CEL library, with the attributes it reads."""

    condition: Condition
    program: Any  # cel_expr_python Expression
    attributes: tuple[str, ...]


MAX_FILES = 256


def _yaml_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise PolicyError("policy folder has no .yaml files", Location(str(path), 1, 1))
        if len(files) > MAX_FILES:
            raise PolicyError(f"policy folder has more than {MAX_FILES} .yaml files", Location(str(files[MAX_FILES]), 1, 1))
        return files
    if not path.exists():
        raise PolicyError("policy bundle not found", Location(str(path), 1, 1))
    return [path]


class BundleBuilder:
    """Collects the sections of one or more files, validating as it goes."""

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.attributes: dict[str, dict[str, AttrType]] = {s: {} for s in SECTIONS}
        self.items: dict[str, list[Condition]] = {s: [] for s in SECTIONS}
        self.tests: list[TestCase] = []
        self.sources: list[SourceFile] = []
        self._ids: dict[tuple[str, str], Location] = {}
        self._when_pos: dict[tuple[str, str], tuple[SourceFile, int, int, str]] = {}

    # -- top level ---------------------------------------------------------------------------
    def add_file(self, src: SourceFile) -> None:
        self.sources.append(src)
        tree = src.tree
        if tree is None:
            return  # an empty file contributes nothing
        if not isinstance(tree, CommentedMap):
            raise src.at_node(tree, "a policy file must be a mapping with sections such as rules:, gates:")
        for key in tree:
            if key not in TOP_KEYS:
                raise src.at_key(tree, key, f"unknown section {key!r}", hint=f"sections are: {', '.join(TOP_KEYS)}")
        for key in ("bundle", "version", "description", "requires_signature"):
            if key in tree:
                value = tree[key]
                if key == "requires_signature":
                    if not isinstance(value, bool):
                        raise src.at_value(tree, key, "requires_signature must be true or false")
                elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
                    raise src.at_value(tree, key, f"{key} must be a string")
                else:
                    value = str(value)
                if key in self.meta and self.meta[key] != value:
                    raise src.at_value(tree, key, f"{key} is set differently in another file of this bundle")
                self.meta[key] = value
        if "attributes" in tree:
            self._attributes(src, tree, tree["attributes"])
        for section in SECTIONS:
            if section in tree:
                self._section(src, tree, section)
        if "tests" in tree:
            self._tests(src, tree)

    def _attributes(self, src: SourceFile, parent: CommentedMap, node: Any) -> None:
        if not isinstance(node, CommentedMap):
            raise src.at_value(parent, "attributes", "attributes must map each section to its typed attributes")
        for section in node:
            if section not in SECTIONS:
                raise src.at_key(node, section, f"attributes for unknown section {section!r}", hint=f"sections: {', '.join(SECTIONS)}")
            decls = node[section]
            if decls is None:
                continue
            if not isinstance(decls, CommentedMap):
                raise src.at_value(node, section, "declare attributes as `name: type` pairs")
            for name in decls:
                if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
                    raise src.at_key(decls, name, f"invalid attribute name {name!r}", hint="use dotted identifiers like item.labels.mature")
                try:
                    t = parse_type(decls[name])
                except ValueError as e:
                    raise src.at_value(decls, name, str(e)) from None
                known = self.attributes[section]
                if name in known and known[name] != t:
                    raise src.at_key(decls, name, f"attribute {name!r} is declared twice with different types")
                for other in known:
                    if other != name and (other.startswith(name + ".") or name.startswith(other + ".")):
                        raise src.at_key(decls, name, f"attribute {name!r} overlaps {other!r}; declare leaves only")
                known[name] = t

    # -- sections ----------------------------------------------------------------------------
    def _section(self, src: SourceFile, parent: CommentedMap, section: str) -> None:
        seq = parent[section]
        if seq is None:
            return
        if not isinstance(seq, CommentedSeq):
            raise src.at_value(parent, section, f"{section} must be a list")
        for i, item in enumerate(seq):
            if not isinstance(item, CommentedMap):
                raise src.at_item(seq, i, f"each entry of {section} must be a mapping with id and when")
            self.items[section].append(self._condition(src, section, item))

    def _condition(self, src: SourceFile, section: str, item: CommentedMap) -> Condition:
        allowed = {
            "rules": {"id", "when", "action", "reason", "surface", "on_missing", "rollout", "shadow", "evaluator"},
            "gates": {"id", "when", "reason", "on_missing", "decide", "min_n"},
            "purposes": {"id", "when", "effect", "reason", "on_missing"},
            "alerts": {"id", "when", "severity", "then", "reason", "on_missing"},
        }[section]
        for key in item:
            if key not in allowed:
                raise src.at_key(item, key, f"unknown field {key!r} in {section}", hint=f"fields: {', '.join(sorted(allowed))}")
        for key in ("id", "when"):
            if key not in item:
                raise src.at_node(item, f"{section} entry is missing `{key}`")
        rid = item["id"]
        if not isinstance(rid, str) or not ID_RE.match(rid):
            raise src.at_value(item, "id", f"invalid id {rid!r}", hint="letters, digits, and _ . : - (max 128)")
        loc = Location(src.name, item.lc.line + 1, item.lc.col + 1)
        if (section, rid) in self._ids:
            raise src.at_value(item, "id", f"duplicate {section[:-1]} id {rid!r} (first defined at {self._ids[(section, rid)]})")
        self._ids[(section, rid)] = loc
        when = item["when"]
        if isinstance(when, bool):
            when = "true" if when else "false"
        if not isinstance(when, str) or not when.strip():
            raise src.at_value(item, "when", "`when` must be a CEL expression string")
        try:  # YAML \u escapes can leave UTF-16 surrogate pairs: join them, refuse lone ones
            when = when.encode("utf-16", "surrogatepass").decode("utf-16")
        except UnicodeError:
            raise src.at_value(item, "when", "`when` contains an invalid unicode escape (a lone surrogate)") from None
        self._when_pos[(section, rid)] = (src, *src.value_start(item, "when"))
        reason = item.get("reason", "")
        if not isinstance(reason, str):
            raise src.at_value(item, "reason", "reason must be a string")
        on_missing = item.get("on_missing", DEFAULT_ON_MISSING[section])
        if on_missing == "fail_open":
            on_missing = "skip"
        if on_missing not in ("fail_closed", "skip"):
            raise src.at_value(item, "on_missing", f"on_missing must be fail_closed or skip (fail_open), not {on_missing!r}")
        common = dict(id=rid, when=str(when), section=section, reason=reason, on_missing=on_missing, location=loc)
        if section == "rules":
            return self._rule(src, item, common)
        if section == "gates":
            decide = item.get("decide", "interval")
            if decide not in GATE_DECIDE:
                raise src.at_value(item, "decide", f"decide must be interval or point, not {decide!r}")
            min_n = item.get("min_n", DEFAULT_MIN_N)
            if isinstance(min_n, bool) or not isinstance(min_n, int) or min_n < 0:
                raise src.at_value(item, "min_n", f"min_n must be a whole number of items (0 or more), not {min_n!r}")
            return Gate(**common, decide=decide, min_n=min_n)
        if section == "purposes":
            effect = item.get("effect", "deny")
            if effect not in ("deny", "allow"):
                raise src.at_value(item, "effect", f"effect must be deny or allow, not {effect!r}")
            return Purpose(**common, effect=effect)
        severity = item.get("severity", "warn")
        if severity not in ("info", "warn", "page"):
            raise src.at_value(item, "severity", f"severity must be info, warn or page, not {severity!r}")
        then = item.get("then", [])
        if isinstance(then, str):
            then = [then]
        if not isinstance(then, list):
            raise src.at_value(item, "then", "then must be a list of mitigation calls like trip_breaker(\"for_you\")")
        calls = []
        for j, text in enumerate(then):
            try:
                calls.append(_parse_call(str(text)))
            except ValueError as e:
                seq = item["then"] if isinstance(item["then"], CommentedSeq) else None
                raise (src.at_item(seq, j, str(e)) if seq is not None else src.at_value(item, "then", str(e))) from None
        return Alert(**common, severity=severity, then=tuple(calls))

    def _rule(self, src: SourceFile, item: CommentedMap, common: dict) -> Rule:
        if "action" not in item:
            raise src.at_node(item, "rule is missing `action`", hint=_action_usage())
        try:
            action = _parse_action(item["action"])
        except ValueError as e:
            raise src.at_value(item, "action", str(e), hint=_action_usage()) from None
        surfaces = item.get("surface", [])
        if isinstance(surfaces, str):
            surfaces = [surfaces]
        if not isinstance(surfaces, list) or not all(isinstance(s, str) and s for s in surfaces):
            raise src.at_value(item, "surface", "surface must be a surface name or a list of them")
        rollout = item.get("rollout", 100)
        if isinstance(rollout, bool) or not isinstance(rollout, (int, float)) or not 0 <= rollout <= 100:
            raise src.at_value(item, "rollout", "rollout must be a percentage from 0 to 100")
        shadow = item.get("shadow", False)
        if not isinstance(shadow, bool):
            raise src.at_value(item, "shadow", "shadow must be true or false")
        evaluator = item.get("evaluator", "vectorised")
        if evaluator not in ("vectorised", "reference"):
            raise src.at_value(item, "evaluator", "evaluator must be vectorised or reference")
        return Rule(**common, action=action, surfaces=tuple(surfaces), rollout=float(rollout), shadow=shadow, evaluator=evaluator)

    def _tests(self, src: SourceFile, parent: CommentedMap) -> None:
        seq = parent["tests"]
        if seq is None:
            return
        if not isinstance(seq, CommentedSeq):
            raise src.at_value(parent, "tests", "tests must be a list of cases")
        for i, case in enumerate(seq):
            if not isinstance(case, CommentedMap):
                raise src.at_item(seq, i, "each test case must be a mapping")
            for key in case:
                if key not in ("name", "input", "expect", *SECTIONS):
                    raise src.at_key(case, key, f"unknown field {key!r} in a test case", hint="name, input, expect, and one of rules/gates/purposes/alerts")
            sections = [s for s in SECTIONS if s in case]
            if len(sections) != 1:
                raise src.at_node(case, "a test case names exactly one section: rules, gates, purposes or alerts")
            section = sections[0]
            params = case[section] or {}
            if not isinstance(params, dict):
                raise src.at_value(case, section, "test parameters must be a mapping, e.g. {surface: for_you}")
            for key in ("input", "expect"):
                if not isinstance(case.get(key), dict):
                    raise src.at_node(case, f"test case needs `{key}` as a mapping")
            name = str(case.get("name", f"case {i + 1}"))
            self.tests.append(
                TestCase(
                    name=name,
                    section=section,
                    params=_plain(params),
                    input=_plain(case["input"]),
                    expect=_plain(case["expect"]),
                    location=Location(src.name, case.lc.line + 1, case.lc.col + 1),
                )
            )

    # -- CEL ---------------------------------------------------------------------------------
    def compile_all(self) -> dict[str, dict[str, CompiledCondition]]:
        from cel_expr_python import cel

        compiled: dict[str, dict[str, CompiledCondition]] = {}
        for section in SECTIONS:
            decls = self.attributes[section]
            env = cel.NewEnv(variables={name: t.cel() for name, t in decls.items()})
            compiled[section] = {}
            for cond in self.items[section]:
                compiled[section][cond.id] = self._compile_one(env, cond, decls)
                self._check_supplied(compiled[section][cond.id], decls)
        return compiled

    def _check_supplied(self, cc: CompiledCondition, decls: dict[str, AttrType]) -> None:
        """Refuse a condition that reads an attribute the producer of its section does not supply
        (``assay.policy.supplied``), at the place in the file where it reads it."""
        from assay.policy.supplied import SUPPLIED

        supplied = SUPPLIED[cc.condition.section]
        for name in cc.attributes:
            problem = supplied.problem(name, decls[name])
            if problem is not None:
                line, col = _find_name(cc.condition.when, name)
                raise self.when_error(cc.condition, line, col, *problem)

    def _compile_one(self, env: Any, cond: Condition, decls: dict[str, AttrType]) -> CompiledCondition:
        from assay.policy.checked_ast import decode_checked

        try:
            program = env.compile(cond.when)
        except RuntimeError as e:
            raise self._cel_error(cond, str(e), decls) from None
        rtype = program.return_type()
        if rtype.name().lower() != "bool":
            raise self.when_error(cond, 1, 1, f"condition must be a bool, but it is {rtype.name().lower()}")
        ast = decode_checked(program.serialize())
        reads = sorted({name for name, _ in ast.references.values() if name in decls})
        return CompiledCondition(cond, program, tuple(reads))

    def when_error(self, cond: Condition, line: int, col: int, message: str, hint: str | None = None) -> PolicyError:
        """An error at (line, col) inside a condition's CEL text, mapped to the YAML file."""
        src, start_line, start_col, style = self._when_pos[(cond.section, cond.id)]
        if line == 1:
            return src.error(message, start_line, start_col + col - 1, hint)
        if style in "|>":
            return src.error(message, start_line + line - 1, start_col + col - 1, hint)
        return src.error(message, start_line + line - 1, col, hint)

    def _cel_error(self, cond: Condition, text: str, decls: dict[str, AttrType]) -> PolicyError:
        m = _CEL_ERR.search(text)
        if not m:
            return self.when_error(cond, 1, 1, f"invalid CEL condition: {text}")
        line, col, message = int(m.group(1)), int(m.group(2)), m.group(3).split("\n")[0].strip()
        hint = None
        if "undeclared reference" in message:
            # CEL points at the last `.field`; point at the start of the whole dotted name
            text_line = cond.when.split("\n")[line - 1] if line - 1 < len(cond.when.split("\n")) else ""
            while col > 1 and (text_line[col - 2 : col - 1].isalnum() or text_line[col - 2 : col - 1] in "_."):
                col -= 1
            known = ", ".join(sorted(decls)) or "none"
            if "(" in cond.when and "undeclared reference to '" in message:
                hint = f"attributes declared for {cond.section}: {known}"
            else:
                hint = f"declare it under attributes.{cond.section}; declared: {known}"
            message = message.replace(" (in container '')", "")
        elif "no matching overload" in message:
            hint = "CEL does not mix int and double: write 1.0, not 1, to compare with a double"
        elif "Syntax error" in message:
            message = message.replace("Syntax error: ", "syntax error: ")
        return self.when_error(cond, line, col, message, hint)


def _find_name(text: str, name: str) -> tuple[int, int]:
    """(line, column), 1-based, of the first read of the dotted ``name`` in a condition's text."""
    m = re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", text)
    if m is None:
        return 1, 1
    before = text[: m.start()]
    return before.count("\n") + 1, m.start() - (before.rfind("\n") + 1) + 1


def _parse_action(value: Any) -> Action:
    """The action a rule's ``action:`` names, parsed by its own type (assay.policy.actions)."""
    from assay.policy.actions import ACTIONS

    if not isinstance(value, str):
        raise ValueError("action must be a string such as drop or demote(0.5)")
    m = _ACTION_RE.match(value)
    if not m or m.group(1) not in ACTIONS:
        raise ValueError(f"unknown action {value!r}")
    action = ACTIONS.get(m.group(1)).parse(_split_args(m.group(2)))
    if not isinstance(action, Action):
        raise ValueError(f"action {m.group(1)!r} parsed to a {type(action).__name__}, not a guard action")
    return action


def _action_usage() -> str:
    from assay.policy.actions import ACTIONS

    return " | ".join(ACTIONS.get(name).usage or name for name in ACTIONS)


def _split_args(text: str | None) -> list[str]:
    if text is None or not text.strip():
        return []
    parts, cur, quote = [], "", ""
    for ch in text:
        if quote:
            cur += ch
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            cur += ch
        elif ch == ",":
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if quote:
        raise ValueError("unterminated string in arguments")
    parts.append(cur.strip())
    return parts


def _parse_call(text: str) -> MitigationCall:
    m = _CALL_RE.match(text)
    if not m:
        raise ValueError(f"mitigation {text!r} must look like name(args), e.g. trip_breaker(\"for_you\")")
    args: list[Any] = []
    for a in _split_args(m.group(2)):
        if a[:1] in "\"'" and a[-1:] == a[:1] and len(a) >= 2:
            args.append(a[1:-1])
        else:
            try:
                args.append(int(a))
            except ValueError:
                try:
                    args.append(float(a))
                except ValueError:
                    raise ValueError(f"argument {a!r} of {m.group(1)} must be a quoted string or a number") from None
    return MitigationCall(m.group(1), tuple(args))


def _plain(value: Any) -> Any:
    """ruamel's commented containers -> plain dicts/lists (for test inputs and hashing)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer() and type(value).__name__ != "float":
        return float(value)
    if type(value).__name__ in ("ScalarFloat",):
        return float(value)
    if type(value).__name__ in ("ScalarInt",):
        return int(value)
    if type(value).__name__ in ("ScalarBoolean",):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    return value


class Bundle:
    """A loaded, validated, type-checked policy bundle. Immutable after loading."""

    def __init__(self, path: Path, builder: BundleBuilder, compiled: dict[str, dict[str, CompiledCondition]]):
        self.path = path
        self.name: str = builder.meta.get("bundle", path.stem)
        self.version: str = builder.meta.get("version", "0")
        self.description: str = builder.meta.get("description", "")
        self.requires_signature: bool = bool(builder.meta.get("requires_signature", False))
        self.attributes = builder.attributes
        self.rules: list[Rule] = list(builder.items["rules"])  # type: ignore[arg-type]
        self.gates: list[Gate] = list(builder.items["gates"])  # type: ignore[arg-type]
        self.purposes: list[Purpose] = list(builder.items["purposes"])  # type: ignore[arg-type]
        self.alerts: list[Alert] = list(builder.items["alerts"])  # type: ignore[arg-type]
        self.tests: list[TestCase] = builder.tests
        self.files = [s.path for s in builder.sources]
        self._compiled = compiled
        self._builder = builder
        self._rule_sets: dict[str, Any] = {}

    # -- identity ----------------------------------------------------------------------------
    def canonical(self) -> dict[str, Any]:
        """The content that the hash covers: key order, whitespace, comments and file layout do
        not change it; rule order does (first match wins)."""

        def cond(c: Condition) -> dict[str, Any]:
            d: dict[str, Any] = {"id": c.id, "when": c.when.strip(), "reason": c.reason, "on_missing": c.on_missing}
            if isinstance(c, Rule):
                d.update(action=str(c.action), surfaces=list(c.surfaces), rollout=c.rollout, shadow=c.shadow, evaluator=c.evaluator)
            elif isinstance(c, Purpose):
                d["effect"] = c.effect
            elif isinstance(c, Alert):
                d.update(severity=c.severity, then=[str(t) for t in c.then])
            elif isinstance(c, Gate):  # only when set, so bundles written before these options keep their hash
                if c.decide != "interval":
                    d["decide"] = c.decide
                if c.min_n != DEFAULT_MIN_N:
                    d["min_n"] = c.min_n
            return d

        return {
            "bundle": self.name,
            "version": self.version,
            "description": self.description,
            "requires_signature": self.requires_signature,
            "attributes": {s: {k: t.signature for k, t in sorted(v.items())} for s, v in self.attributes.items() if v},
            "rules": [cond(r) for r in self.rules],
            "gates": [cond(g) for g in self.gates],
            "purposes": [cond(p) for p in self.purposes],
            "alerts": [cond(a) for a in self.alerts],
            "tests": [{"name": t.name, "section": t.section, "params": t.params, "input": t.input, "expect": t.expect} for t in self.tests],
        }

    @cached_property
    def hash(self) -> str:
        """sha256 (hex) of the RFC 8785 canonical JSON of :meth:`canonical`."""
        return hashlib.sha256(rfc8785.dumps(self.canonical())).hexdigest()

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    # -- lookups -----------------------------------------------------------------------------
    def surfaces(self) -> set[str]:
        return {s for r in self.rules for s in r.surfaces}

    def rules_for(self, surface: str) -> list[Rule]:
        return [r for r in self.rules if r.applies_to(surface)]

    def compiled(self, section: str, cond_id: str) -> CompiledCondition:
        return self._compiled[section][cond_id]

    def condition(self, section: str, cond_id: str) -> Condition:
        return self._compiled[section][cond_id].condition

    # -- evaluation ----------------------------------------------------------------------------
    def check_gates(self, context: dict[str, Any], only: list[str] | None = None):
        """Release gates over a context such as ``{"eval": {"metrics": {...}}}``."""
        from assay.policy.checks import check_gates

        return check_gates(self, context, only)

    def check_purposes(self, context: dict[str, Any]):
        """Purpose limitation over ``{"dataset": {...}, "deployment": {...}}``."""
        from assay.policy.checks import check_purposes

        return check_purposes(self, context)

    def check_alerts(self, context: dict[str, Any]):
        """The alerts that fire over window statistics such as ``{"window": {...}}``."""
        from assay.policy.checks import check_alerts

        return check_alerts(self, context)

    def compile_rules(self, surface: str):
        """The vectorised rule set for one surface, compiled once and cached."""
        from assay.policy.vectorised import CompiledRules

        if surface not in self._rule_sets:
            self._rule_sets[surface] = CompiledRules(self, surface)
        return self._rule_sets[surface]

    def __repr__(self) -> str:
        return f"Bundle({self.name!r}, version={self.version!r}, hash={self.short_hash}, rules={len(self.rules)})"


def load_bundle(path: str | os.PathLike, *, require_signature: bool | None = None, public_key: Any = None) -> Bundle:
    """Load, validate, type-check and compile a bundle (a .yaml file or a folder of them).

    A signature is checked when a public key is given (argument or ``ASSAY_POLICY_PUBKEY``), and
    required when ``require_signature`` is true, the bundle says ``requires_signature: true`` or
    ``ASSAY_POLICY_REQUIRE_SIGNED=1``. Any error raises ``PolicyError`` naming file:line:column.
    """
    from assay.policy.signing import check_signature

    root = Path(path)
    builder = BundleBuilder()
    budget = total = max_bytes()  # the whole bundle, not each file, is bounded
    for file in _yaml_files(root):
        src = read_yaml(file, budget, total=total)
        budget -= len(src.text.encode("utf-8"))
        builder.add_file(src)
    if not any(builder.items.values()):
        raise PolicyError("the bundle is empty: it has no rules, gates, purposes or alerts", Location(str(builder.sources[0].path), 1, 1),
                          hint="a bundle needs at least one rule, gate, purpose or alert")
    compiled = builder.compile_all()
    bundle = Bundle(root, builder, compiled)
    # compile every surface's vectorised rule set now, so an unsupported condition is an error
    # at load time and never a surprise while serving
    for surface in sorted(bundle.surfaces()) or ["*"]:
        bundle.compile_rules(surface)
    if require_signature is None:
        require_signature = bundle.requires_signature or flag_setting("ASSAY_POLICY_REQUIRE_SIGNED")
    if public_key is None and os.environ.get("ASSAY_POLICY_PUBKEY"):
        public_key = os.environ["ASSAY_POLICY_PUBKEY"]
    check_signature(bundle, required=require_signature, public_key=public_key)
    return bundle
