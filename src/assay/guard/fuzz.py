"""A differential fuzzer of the guard: random bundles, requests and candidate batches, in every
input shape the guard accepts, decided by the guard in a child process and by the reference
guard (:mod:`assay.guard.oracle`: one candidate at a time, the CEL library for conditions) here.

    from assay.guard.fuzz import run
    report = run(cases=500, seed=1)       # {"cases", "crashes", "disagreements", "examples", ...}

    python -m assay.guard.fuzz --cases 100000 --seed 7      # a long run

What is generated, on purpose at the edges:

- rules from the vectorised CEL subset (``&& || ! ?:``, comparisons, ``+ - * /``, string ``+``,
  ``in`` lists, list attributes and maps, ``map["k"]``, ``size()``, startsWith/endsWith/contains)
  over request-wide and per-candidate attributes, with constants that hold NUL, ``-0.0``,
  infinities, NaN and ints next to 2^63, and ``?:`` and ``+`` over constants alone; every action,
  ``on_missing``, rollout and shadow;
- values of the declared type and of every wrong one, absent for one candidate or for the whole
  batch (the column or the request attribute not there at all), NaN, ±inf, -0.0, ints at and
  beyond the int64 limits, strings with NUL or a lone surrogate, empty and nested lists, maps;
- candidates as records, as Python-list columns (what JSON decodes to), as numpy columns
  (typed where numpy can hold them, object otherwise), with list features as Arrow list arrays,
  as a pyarrow Table, and as a JSON body through the HTTP route; ids and scores sometimes
  invalid, which must be a 400 naming the field and row.

The guard runs in a child process (``python -m assay.guard.fuzz --child``), so a crash is a
finding (the case is kept and the child restarted) rather than the end of the run. A case agrees
when the guard's per-rule outcomes equal the CEL library's, and its whole slate (served ids in
order, scores, interstitials, and every candidate's action, rules, rank and shadow rules) equals
the reference guard's; or, where the reference says the batch is malformed, the guard refuses it
as bad input.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DECLS = {
    "request.user.age": "int", "request.user.country": "string", "request.user.flag": "bool",
    "request.user.tags": "list(string)", "request.user.w": "double",
    "item.labels.a": "double", "item.labels.b": "double", "item.score": "double", "item.id": "string",
    "item.d": "double", "item.e": "double", "item.i": "int", "item.s": "string", "item.u": "string", "item.t": "bool",
    "item.l": "list(string)", "item.ld": "list(double)", "item.li": "list(int)", "item.m": "map(string, double)",
    "item.source": "string", "item.creator": "string", "item.meta.k": "double", "item.meta.s": "string",
}
FIELDS = {k.split(".", 1)[1]: t for k, t in DECLS.items() if k.startswith("item.") and not k.startswith(("item.labels.", "item.meta."))
          and k not in ("item.id", "item.score")}
FIELDS["meta"] = "meta"  # an object per candidate: item.meta.k and item.meta.s read inside it
LABELS = ("a", "b")
SURFACE = "for_you"
WORDS = ["", "a", "ab", "b", "abc", "é", "Ω", "😀", "zz", "Ab", "ß", "\u200b", "DE", "ugc:x", "news", "a b"]
NUL_WORDS = ["a\x00", "\x00", "\x00a", "a\x00b"]
BAD_WORDS = ["x\ud800", "\udfff", "a\ud83d"]  # lone surrogates
INTS = [0, 1, -1, 2, 17, 18, 2**62, 2**63 - 1, -(2**63), -(2**63) + 1, 2**31, -(2**31)]
BEYOND = [2**63, -(2**63) - 1, 2**64, 10**30]
DOUBLES = [0.0, -0.0, 0.5, 1.0, -1.5, 0.7, 0.9, 1e-300, 1e300, -1e300, math.inf, -math.inf, math.nan, 2.0**63]


# -- CEL text ---------------------------------------------------------------------------------------
def cel_str(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\x00":
            out.append("\\x00")
        elif ch == "\n":
            out.append("\\n")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def cel_double(x: float) -> str:
    if math.isnan(x):
        return "(0.0 / 0.0)"
    if math.isinf(x):
        return "(1e308 * 10.0)" if x > 0 else "(-1e308 * 10.0)"
    if x == 0 and math.copysign(1, x) < 0:
        return "(-0.0)"
    r = repr(float(x))
    return r if ("e" in r or "." in r) else r + ".0"


def cel_int(i: int) -> str:
    return "(-9223372036854775807 - 1)" if i == -(2**63) else (f"({i})" if i < 0 else str(i))


class RuleGen:
    """Random, type-correct CEL conditions over :data:`DECLS`."""

    def __init__(self, rng: random.Random):
        self.r = rng

    def pick(self, xs):
        return xs[self.r.randrange(len(xs))]

    def double(self, d: int) -> str:
        leaves = ["item.d", "item.e", "item.labels.a", "item.labels.b", "item.score", "request.user.w", 'item.m["k"]', 'item.m["x"]',
                  "item.meta.k"]
        if d <= 0 or self.r.random() < 0.45:
            return self.pick(leaves) if self.r.random() < 0.6 else cel_double(self.pick(DOUBLES))
        k = self.r.randrange(3)
        if k == 0:
            return f"({self.double(d - 1)} {self.pick(['+', '-', '*', '/'])} {self.double(d - 1)})"
        if k == 1:
            return f"({self.bool(d - 1)} ? {self.double(d - 1)} : {self.double(d - 1)})"
        return f"(-{self.double(d - 1)})"

    def int(self, d: int) -> str:
        leaves = ["item.i", "request.user.age", "size(item.l)", "size(item.s)", "size(request.user.tags)", "size(item.m)",
                  "size(item.li)", "size(request.user.country)"]
        if d <= 0 or self.r.random() < 0.45:
            return self.pick(leaves) if self.r.random() < 0.6 else cel_int(self.pick(INTS))
        k = self.r.randrange(4)
        if k == 0:
            return f"({self.int(d - 1)} {self.pick(['+', '-'])} {self.int(d - 1)})"
        if k == 1:
            return f"({self.bool(d - 1)} ? {self.int(d - 1)} : {self.int(d - 1)})"
        if k == 2:
            return f"size({self.string(d - 1)})"
        return f"(-{self.int(d - 1)})"

    def string(self, d: int) -> str:
        leaves = ["item.s", "item.u", "item.id", "item.source", "item.creator", "request.user.country", "item.meta.s"]
        if d <= 0 or self.r.random() < 0.5:
            return self.pick(leaves) if self.r.random() < 0.6 else cel_str(self.pick(WORDS + NUL_WORDS))
        if self.r.random() < 0.5:
            return f"({self.string(d - 1)} + {self.string(d - 1)})"
        return f"({self.bool(d - 1)} ? {self.string(d - 1)} : {self.string(d - 1)})"

    def mixed(self) -> str:
        r = self.r
        k = r.randrange(8)
        scalar_str = ["request.user.country", cel_str(self.pick(WORDS)), cel_str(self.pick(NUL_WORDS)), '"a"', '""']
        tails = [".contains({})", ".startsWith({})", ".endsWith({})", " in item.l", " in request.user.tags", " == item.s",
                 " != item.u", " in [{}]", " < item.s"]
        if k in (6, 7):
            # ?: and + over request-wide values and constants only: one value for the batch
            cond = self.pick(["request.user.flag", "true", "false", "request.user.age < 18", '"a" < "b"', "!request.user.flag"])
            a, b = self.pick(scalar_str), self.pick(scalar_str)
            head = f"({cond} ? {a} : {b})" if k == 6 else f"({a} + {b})"
            if r.random() < 0.25:
                return f"size({head}) {self.pick(['==', '>=', '<'])} {r.randrange(3)}"
            return head + self.pick(tails).format(self.pick([*scalar_str, "item.s"]))
        if k == 0:
            return f"{self.pick(['request.user.country', 'item.s', 'item.source', cel_str(self.pick(WORDS + NUL_WORDS))])} in " \
                   f"{self.pick(['item.l', 'request.user.tags'])}"
        if k == 1:
            a, b = self.pick([("request.user.country", "item.s"), ("item.u", "request.user.country"), ("item.s", "item.u"),
                              ("request.user.country", cel_str(self.pick(WORDS + NUL_WORDS))), ("item.creator", "item.source")])
            op = self.pick(["==", "!=", "<", ">=", "startsWith", "endsWith", "contains"])
            return f"{a}.{op}({b})" if op[0].isalpha() else f"{a} {op} {b}"
        if k == 2:
            return f"{self.pick(['request.user.age', 'item.i'])} {self.pick(['<', '>=', '==', '!='])} {self.pick(['item.i', 'request.user.age', '18', '0'])}"
        if k == 3:
            return f"{self.pick(['request.user.w', 'item.d', 'item.labels.a'])} {self.pick(['<', '>=', '==', '!='])} " \
                   f"{self.pick(['item.e', 'request.user.w', 'item.labels.b', '0.5', cel_double(self.pick(DOUBLES))])}"
        if k == 4:
            return f"{self.pick(['request.user.flag', 'item.t', '!request.user.flag'])} {self.pick(['&&', '||'])} " \
                   f"{self.pick(['item.t', 'request.user.flag', 'item.labels.a >= 0.7', 'request.user.age < 18'])}"
        return f"{self.pick(['request.user.w', 'item.d', 'item.labels.a'])} in item.ld"

    def bool(self, d: int) -> str:
        cmp = ["<", "<=", ">", ">=", "==", "!="]
        r = self.r
        atoms = [
            lambda: f"{self.double(min(d, 1))} {self.pick(cmp)} {self.double(min(d, 1))}",
            lambda: f"{self.int(min(d, 1))} {self.pick(cmp)} {self.int(min(d, 1))}",
            lambda: f"{self.string(min(d, 1))} {self.pick(cmp)} {self.string(min(d, 1))}",
            lambda: self.pick(["item.t", "request.user.flag", "true", "false"]),
            lambda: f"{self.pick(['item.t', 'request.user.flag'])} {self.pick(['==', '!='])} {self.pick(['true', 'false', 'item.t'])}",
            lambda: f"{self.string(min(d, 1))} in [{', '.join(cel_str(self.pick(WORDS + NUL_WORDS)) for _ in range(r.randrange(5)))}]",
            lambda: f"{self.string(min(d, 1))} in {self.pick(['item.l', 'request.user.tags'])}",
            lambda: f"{self.double(0)} in item.ld",
            lambda: f"{self.int(0)} in item.li",
            lambda: f"{self.int(0)} in [{', '.join(str(self.pick(INTS[:-3] + INTS[-2:])) for _ in range(r.randrange(4)))}]",
            lambda: self.pick(['"k" in item.m', '"x" in item.m']),
            lambda: f"{self.string(min(d, 1))}.{self.pick(['startsWith', 'endsWith', 'contains'])}({self.string(min(d, 1))})",
            # what the C evaluator takes, with a request-wide value beside a column (absent for the
            # whole batch now and then): the shapes its fast paths special-case
            self.mixed, self.mixed, self.mixed, self.mixed,
        ]
        if d <= 0 or r.random() < 0.4:
            return self.pick(atoms)()
        k = r.randrange(4)
        if k == 0:
            return f"({self.bool(d - 1)} {self.pick(['&&', '||'])} {self.bool(d - 1)})"
        if k == 1:
            return f"!({self.bool(d - 1)})"
        if k == 2:
            return f"({self.bool(d - 1)} ? {self.bool(d - 1)} : {self.bool(d - 1)})"
        return self.pick(atoms)()


def random_bundle(rng: random.Random) -> str:
    """A bundle (JSON, which is YAML) of 1-6 random rules on the fuzzed surface and another."""
    import json

    gen = RuleGen(rng)
    rules = []
    for i in range(rng.randint(1, 6)):
        kind = rng.choice(["drop", "drop", "allow", "demote", "label", "cap"])
        action = {"demote": f"demote({rng.choice([0.5, 0.25, 0.9, 0.0, 0.3])})", "label": f'label("L{i}")',
                  "cap": f"cap({rng.choice(['creator', 'source', 's', 'i', 'l', 'id', 'score', 'nosuch', 't'])}, {rng.randrange(3)})"}.get(kind, kind)
        rule = {"id": f"r{i}", "when": gen.bool(rng.randrange(3)), "action": action, "reason": f"reason {i}"}
        if rng.random() < 0.3:
            rule["on_missing"] = "skip"
        if rng.random() < 0.15:
            rule["rollout"] = rng.choice([0, 10, 50, 90])
        if rng.random() < 0.1:
            rule["shadow"] = True
        if rng.random() < 0.15:
            rule["surface"] = rng.choice([[SURFACE], ["other"], [SURFACE, "other"]])
        if rng.random() < 0.05:
            rule["evaluator"] = "reference"  # served one candidate at a time by the CEL library
        rules.append(rule)
    return json.dumps({"bundle": "fuzz", "version": "1", "attributes": {"rules": DECLS}, "rules": rules})


# -- values -----------------------------------------------------------------------------------------
def random_scalar(rng: random.Random, kind: str, clean: bool = False) -> Any:
    if kind == "int":
        if clean:
            return rng.choice(INTS) if rng.random() < 0.7 else rng.randint(-50, 50)
        return rng.choice(INTS) if rng.random() < 0.7 else (rng.choice(BEYOND) if rng.random() < 0.3 else rng.randint(-50, 50))
    if kind == "double":
        return rng.choice(DOUBLES) if rng.random() < 0.6 else rng.choice([rng.random(), float(rng.randint(-3, 3))])
    if kind == "string":
        x = rng.random()
        return rng.choice(WORDS) if x < 0.8 or clean else rng.choice(NUL_WORDS) if x < 0.9 else rng.choice(BAD_WORDS)
    return rng.random() < 0.5


WRONG = [None, "x", 1.5, 3, True, [1], {"k": 1}, ["a", None], [], math.nan]


def random_value(rng: random.Random, declared: str, clean: bool = False) -> Any:
    """A value for an attribute of the declared type: ``clean`` batches hold only well-typed
    values (absent ones aside), which the typed fast paths take; the others anything at all."""
    if rng.random() < (0.04 if clean else 0.12):
        return None if clean else rng.choice(WRONG)
    if declared.startswith("list("):
        elem = declared[5:-1]
        return [random_scalar(rng, elem, clean) for _ in range(rng.choice([0, 0, 1, 1, 2, 3]))]
    if declared.startswith("map("):
        return {k: random_scalar(rng, "double", clean) for k in rng.sample(["k", "x", "y"], rng.randrange(3))}
    if declared == "meta":
        meta = {}
        if rng.random() < 0.8:
            meta["k"] = random_value(rng, "double", clean)
        if rng.random() < 0.8:
            meta["s"] = random_value(rng, "string", clean)
        return meta
    return random_scalar(rng, declared, clean)


def random_request(rng: random.Random) -> dict[str, Any]:
    user: dict[str, Any] = {"id": rng.choice(["u1", "u2", "teen-7", "", 5])}
    clean = rng.random() < 0.5
    for name, t in DECLS.items():
        if name.startswith("request.user.") and rng.random() < 0.75:
            user[name.rsplit(".", 1)[1]] = random_value(rng, t, clean)
    if rng.random() < 0.05:
        user = rng.choice([None, "x", []])  # not an object: every request attribute is absent
    return {"request_id": f"f{rng.randrange(10**9)}", "surface": SURFACE, "user": user, "deadline_ms": 60_000}


def random_candidates(rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    n = rng.choice([0, 1, 2, 3, 5, 8, 9, 13, 17, 40])
    ids = [f"c{k}" if rng.random() < 0.8 else rng.choice(["é", "😀-1", "a b", "x" * 20]) + str(k) for k in range(n)]
    given = {f: rng.random() < 0.8 for f in FIELDS}  # a field absent for the whole batch
    clean = {f: rng.random() < 0.5 for f in FIELDS}  # a field of well-typed values only
    records = []
    for k in range(n):
        rec: dict[str, Any] = {"id": ids[k], "score": rng.choice([rng.random(), 0.5, 0.0, -0.0, 1e-300, 3.0, 1])}
        for f, t in FIELDS.items():
            if given[f] and rng.random() < 0.9:
                rec[f] = random_value(rng, t, clean[f])
        records.append(rec)
    if n and rng.random() < 0.08:  # malformed: must be refused as bad input
        k = rng.randrange(n)
        bad = rng.choice(["dup", "empty", "nan", "inf", "str", "bool", "none", "id_int"])
        if bad == "dup" and n > 1:
            records[k]["id"] = records[(k + 1) % n]["id"]
        elif bad == "empty":
            records[k]["id"] = ""
        elif bad == "id_int":
            records[k]["id"] = 7
        else:
            records[k]["score"] = {"nan": math.nan, "inf": math.inf, "str": "0.5", "bool": True, "none": None}.get(bad, math.nan)
    labels: dict[str, dict[str, Any]] = {}
    for rec in records:
        if isinstance(rec["id"], str) and rec["id"] and rng.random() < 0.85:
            labels[rec["id"]] = {name: rng.choice([0.0, 0.1, 0.5, 0.69, 0.7, 0.9, 1.0, rng.random()])
                                 for name in LABELS if rng.random() < 0.75}
    return records, labels


# -- input shapes -----------------------------------------------------------------------------------
SHAPES = ("records", "lists", "numpy", "arrow", "table", "json")


def _column(values: list[Any], shape: str, rng: random.Random) -> Any:
    if shape == "lists":
        return list(values)
    if shape in ("arrow", "table") and rng.random() < 0.8:
        import pyarrow as pa

        try:
            return pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
            pass  # a mixture Arrow cannot hold: given as a Python list
    if shape in ("numpy", "arrow", "table"):
        kinds = {type(v) for v in values}
        if len(kinds) == 1 and kinds <= {float, int, bool, str} and values:
            try:
                arr = np.array(values)
                if arr.ndim == 1 and arr.dtype.kind in "fibU":
                    return arr
            except (OverflowError, ValueError):
                pass
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return list(values)


def shaped(records: list[dict[str, Any]], shape: str, rng: random.Random) -> Any:
    """The batch in one of the input forms the guard accepts."""
    if shape == "records":
        return records
    names = ["id", "score", *sorted({k for r in records for k in r if k not in ("id", "score")})]
    cols = {name: _column([r.get(name) for r in records], shape, rng) for name in names}
    if shape == "table":
        import pyarrow as pa

        if all(isinstance(c, pa.Array) for c in cols.values()):
            return pa.table(cols)
    return cols


def json_safe(v: Any) -> Any:
    """A value as a JSON client can send it: a lone surrogate cannot be UTF-8, an int beyond 64
    bits is not a JSON number orjson reads (both become other edge values)."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
            return v
        except UnicodeEncodeError:
            return v.encode("utf-8", "replace").decode("utf-8")
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and not -(2**63) <= v < 2**64:
        return 2**64 - 1 if v > 0 else -(2**63)
    if isinstance(v, list):
        return [json_safe(x) for x in v]
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    return v


HOSTILE = [b"", b"null", b"[]", b"{", b'{"request": 1, "candidates": []}', b'{"request": {}, "candidates": []}',
           b'{"request": {"surface": "for_you"}}', b'{"request": {"surface": "for_you"}, "candidates": "x"}',
           b'{"request": {"surface": "for_you"}, "candidates": {"id": ["a"]}}',
           b'{"request": {"surface": "for_you"}, "candidates": {"id": ["a", "b"], "score": [1]}}',
           b'{"request": {"surface": "for_you"}, "candidates": {"id": [["a"]], "score": [1]}}',
           b'{"request": {"surface": "for_you"}, "candidates": {"id": [1e400], "score": [1]}}',
           b'{"request": {"surface": "for_you", "deadline_ms": -1}, "candidates": []}',
           b'{"request": {"surface": "for_you", "deadline_ms": true}, "candidates": []}',
           b'{"request": {"surface": ["for_you"]}, "candidates": []}',
           b'{"request": {"surface": "nope"}, "candidates": []}',
           b'{"request": {"surface": "for_you"}, "candidates": [{"id": "a", "score": 1, "labels": 3}]}',
           b'{"request": {"surface": "for_you"}, "candidates": [{"id": "a", "score": 1, "labels": {"a": 0.5}}]}',
           b'{"request": {"surface": "for_you"}, "candidates": {"id": ["a"], "score": [1], "": [1]}}',
           b'{"request": {"surface": "for_you"}, "candidates": {"id": ["a"], "score": [1], "x": [[[[[[1]]]]]]}}',
           b'{"request": {"surface": "for_you"}, "candidates": [{"id": "a", "score": 18446744073709551616}]}',
           b'{"request": {"surface": "for_you", "user": {"id": {"x": 1}}}, "candidates": [{"id": "a", "score": 1}]}',
           b'\xff\xfe{}', b'{"request": {"surface": "for_you"}, "candidates": [' + b'1,' * 50 + b'1]}']


def as_given(candidates: Any) -> list[dict[str, Any]] | None:
    """What the guard was given, read back as records of Python values (the oracle's input)."""
    if isinstance(candidates, list):
        return [dict(r) for r in candidates]
    if hasattr(candidates, "column_names"):
        candidates = {name: candidates.column(name) for name in candidates.column_names}
    cols = {}
    for name, col in candidates.items():
        if hasattr(col, "to_pylist"):
            cols[name] = col.to_pylist()
        elif isinstance(col, np.ndarray):
            cols[name] = col.tolist()
        else:
            cols[name] = list(col)
    n = len(cols["id"])
    return [{name: vals[i] for name, vals in cols.items() if vals[i] is not None or name in ("id", "score")} for i in range(n)]


def malformed(records: list[dict[str, Any]]) -> str | None:
    """Why docs/guard.md refuses the batch (ids non-empty, unique strings; scores finite numbers),
    or None."""
    seen = set()
    for i, r in enumerate(records):
        item_id, score = r.get("id"), r.get("score")
        if not isinstance(item_id, str) or not item_id or item_id in seen:
            return f"candidates[{i}]: id"
        seen.add(item_id)
        if isinstance(score, np.generic):
            score = score.item()
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            return f"candidates[{i}]: score"
    return None


# -- the child ------------------------------------------------------------------------------------------
def _frame_write(stream, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _frame_read(stream) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    (size,) = struct.unpack("<Q", head)
    return pickle.loads(stream.read(size))


def decide_in_child(guards: dict[str, Any], case: dict[str, Any]) -> dict[str, Any]:
    """What the child does for one case: the guard's slate (or its refusal), and the rules'
    outcomes straight from the policy library for the same records, numpy and C."""
    from assay.errors import BadInput
    from assay.guard.core import Guard, GuardConfig
    from assay.policy import Batch, load_bundle
    from assay.store.labels import InMemoryLabelStore

    key = (case["bundle"], case["mode"])
    guard = guards.get(key)
    if guard is None:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(case["bundle"])
        try:
            bundle = load_bundle(f.name)
        finally:
            os.unlink(f.name)
        config = GuardConfig(surface_modes={SURFACE: case["mode"]}, deadline_ms=60_000, extra_surfaces=(SURFACE,))
        guard = guards[key] = Guard(bundle, None, config=config)
    store = InMemoryLabelStore()
    labels = case["labels"]
    if labels:
        ids = list(labels)
        store.put(ids, {name: [labels[i].get(name, math.nan) for i in ids] for name in LABELS}, "fuzz")
    guard.labels = store
    out: dict[str, Any] = {}
    try:
        if case["shape"] == "json":
            from assay.guard.http import _decide

            status, payload = _decide(guard, case["body"])
            import orjson

            body = orjson.loads(payload)
            if status == 400:
                return {"status": "bad_input", "error": body.get("error", "")}
            if status != 200:
                return {"status": "exception", "error": f"HTTP {status}: {body}"}
            out.update(status="ok", served=[i["id"] for i in body["items"]], scores=[i["score"] for i in body["items"]],
                       labels={i["id"]: tuple(i["labels"]) for i in body["items"] if i.get("labels")},
                       decisions=[(d["action"], tuple(d["rule_ids"]), d["rank_after"], tuple(d["shadow_rule_ids"]))
                                  for d in body.get("decisions", [])])
        else:
            slate = guard.apply(case["request"], case["candidates"])
            evaluated = slate.decision.outcomes if slate.decision is not None else None
            out.update(status="ok", served=list(slate.item_ids), scores=slate.scores.tolist(), labels=dict(slate.item_labels),
                       decisions=[(d.action, d.rule_ids, d.rank_after, d.shadow_rule_ids) for d in slate.decisions],
                       outcomes=None if evaluated is None else evaluated.tolist())
    except BadInput as e:
        return {"status": "bad_input", "error": e.message}
    except Exception:
        return {"status": "exception", "error": traceback.format_exc()}
    records = case.get("records")
    if records is not None:
        compiled = guard.bundle.surface(SURFACE).compiled
        items = [{**r, "labels": {k: v for k, v in labels.get(r["id"], {}).items()}} for r in records]
        batch_out = {}
        for native in (False, True):
            try:
                batch_out[native] = compiled.evaluate(Batch.from_records({"request": case["request"]}, items), native=native).tolist()
            except Exception:
                return {"status": "exception", "error": f"policy batch (native={native}): " + traceback.format_exc()}
        out["batch"] = batch_out
    return out


def child_main() -> None:
    """The child's loop: one framed pickle in, one out, until the parent closes the pipe."""
    import gc

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the frame stream
    guards: dict[str, Any] = {}
    while True:
        try:
            case = _frame_read(stdin)
        except EOFError:
            return
        if len(guards) > 64:
            guards.clear()
            gc.collect()
        _frame_write(stdout, decide_in_child(guards, case))


class Child:
    """The guard in its own process: a crash or a hang ends the case, not the run."""

    def __init__(self, timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen([sys.executable, "-m", "assay.guard.fuzz", "--child"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def ask(self, case: dict[str, Any]) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        import selectors

        try:
            _frame_write(self.proc.stdin, case)
            sel = selectors.DefaultSelector()
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(self.timeout_s):
                self.kill()
                return {"status": "crash", "error": f"no answer within {self.timeout_s:.0f} s (hang)"}
            return _frame_read(self.proc.stdout)
        except (EOFError, BrokenPipeError, OSError):
            rc = self.proc.wait(10)
            err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
            self.proc = None
            return {"status": "crash", "error": f"child exited {rc}: {err}"}

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


# -- the run ----------------------------------------------------------------------------------------------
@dataclass
class Report:
    cases: int = 0
    bundles: int = 0
    crashes: int = 0
    disagreements: int = 0
    bad_input_cases: int = 0
    skipped_bundles: int = 0  # outside the vectorised subset (refused at load, as documented)
    shapes: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _expected(oracle: Any, case: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    slate = oracle.decide(SURFACE, case["request"], records, case["labels"])
    return {"served": slate.item_ids, "scores": slate.scores, "labels": slate.item_labels,
            "decisions": [(c.action, c.rule_ids, c.rank, c.shadow_rule_ids) for c in slate.candidates],
            "outcomes": [oracle.outcomes(SURFACE, case["request"], r, case["labels"].get(r["id"], {})) for r in records]}


def _same_scores(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


def compare(got: dict[str, Any], want: dict[str, Any]) -> str | None:
    """Why the guard's answer differs from the reference's, or None."""
    outcomes = np.asarray(want["outcomes"], dtype=np.int64).T.tolist() if want["outcomes"] else []
    if got.get("outcomes") is not None and outcomes and got["outcomes"] != outcomes:
        return f"rule outcomes differ: guard {got['outcomes']} reference {outcomes}"
    for native, matrix in (got.get("batch") or {}).items():
        if outcomes and matrix != outcomes:
            return f"policy batch outcomes (native={native}) differ: {matrix} reference {outcomes}"
    if got["served"] != want["served"]:
        return f"served differ: guard {got['served']} reference {want['served']}"
    if not _same_scores(got["scores"], want["scores"]):
        return f"scores differ: guard {got['scores']} reference {want['scores']}"
    if got["labels"] != want["labels"]:
        return f"interstitials differ: guard {got['labels']} reference {want['labels']}"
    for k, (g, w) in enumerate(zip(got["decisions"], want["decisions"], strict=False)):
        if tuple(g) != tuple(w):
            return f"candidate {k}: guard {g} reference {w}"
    if len(got["decisions"]) != len(want["decisions"]):
        return f"{len(got['decisions'])} decisions for {len(want['decisions'])} candidates"
    return None


def run(cases: int = 300, seed: int = 0, *, batches_per_bundle: int = 8, max_examples: int = 5,
        time_limit_s: float | None = None, child: Child | None = None) -> Report:
    """Fuzz ``cases`` batches (``batches_per_bundle`` per random bundle)."""
    from assay.guard.oracle import ReferenceGuard
    from assay.policy import PolicyError, load_bundle

    rng = random.Random(seed)
    report = Report()
    own = child is None
    child = child or Child()
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="assay-fuzz-") as tmp:
            while report.cases < cases and (time_limit_s is None or time.perf_counter() - started < time_limit_s):
                text = random_bundle(rng)
                path = Path(tmp) / "b.yaml"
                path.write_text(text)
                try:
                    bundle = load_bundle(path)
                except PolicyError:
                    report.skipped_bundles += 1
                    continue
                report.bundles += 1
                mode = rng.choice(["fail_closed", "fail_open"])
                oracle = ReferenceGuard(bundle, surface_modes={SURFACE: mode})
                for _ in range(batches_per_bundle):
                    if report.cases >= cases:
                        break
                    report.cases += 1
                    _one_case(rng, text, mode, oracle, child, report, max_examples)
    finally:
        if own:
            child.close()
        report.seconds = time.perf_counter() - started
    return report


def _one_case(rng: random.Random, text: str, mode: str, oracle: Any, child: Child, report: Report, max_examples: int) -> None:
    import orjson

    request = random_request(rng)
    records, labels = random_candidates(rng)
    shape = rng.choice(SHAPES)
    report.shapes[shape] = report.shapes.get(shape, 0) + 1
    case: dict[str, Any] = {"bundle": text, "mode": mode, "shape": shape, "request": request, "labels": labels}
    if shape == "json" and rng.random() < 0.15:  # a hostile body: a 400, never a crash or a 5xx
        got = child.ask({**case, "body": rng.choice(HOSTILE)})
        if got["status"] not in ("ok", "bad_input"):
            report.disagreements += got["status"] != "crash"
            report.crashes += got["status"] == "crash"
            if len(report.examples) < max_examples:
                report.examples.append({"problem": f"hostile body: {got['status']} {got.get('error', '')}"[-3000:], "bundle": text,
                                        "mode": mode, "shape": shape, "request": "", "candidates": "", "labels": ""})
        return
    if shape == "json":
        request, records = json_safe(request), json_safe(records)
        raw = orjson.dumps({"request": request, "candidates": shaped(records, rng.choice(["records", "lists"]), rng),
                            "decisions": True})
        body = orjson.loads(raw)  # what the server will decode: NaN and inf are null in JSON
        case["body"] = raw
        case["request"] = request = body["request"]
        cands = body["candidates"]
        given = as_given(cands)
    else:
        cands = shaped(records, shape, rng)
        case["candidates"] = cands
        given = as_given(cands)
    why = malformed(given)
    if why is None:
        case["records"] = given
    got = child.ask(case)
    status = got["status"]
    problem = None
    if status == "crash":
        report.crashes += 1
        problem = got["error"]
    elif why is not None:
        report.bad_input_cases += 1
        if status != "bad_input":
            problem = f"malformed batch ({why}) was not refused: {status} {got.get('error', '')}"
    elif status != "ok":
        problem = f"{status}: {got.get('error', '')}"
    else:
        problem = compare(got, _expected(oracle, case, given))
    if problem is not None:
        if status != "crash":
            report.disagreements += 1
        if len(report.examples) < max_examples:
            report.examples.append({"problem": problem[-3000:], "bundle": text, "mode": mode, "shape": shape,
                                    "request": repr(request), "candidates": repr(given)[:4000], "labels": repr(labels)[:2000]})


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m assay.guard.fuzz", description=__doc__.split("\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    args = p.parse_args(argv)
    if args.child:
        child_main()
        return 0
    report = run(args.cases, args.seed, time_limit_s=args.time_limit, max_examples=20)
    print(json.dumps(report.to_dict(), indent=2, default=str))
    return 1 if report.crashes or report.disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
