"""The guard: policy rules applied to a candidate batch as column operations, in milliseconds.

``Guard(bundle, labels).apply(request, candidates) -> Slate``.

The policy library (``assay.policy``) says, per rule and candidate, whether the rule's condition is
TRUE, FALSE or MISSING. The guard owns what that *means* for a slate:

- rules run in bundle order; **hard** actions (``drop``, ``allow``) are decided by the first rule
  that matches — an ``allow`` exempts the candidate from every later rule; **soft** actions
  (``demote(f)`` multiplies the score, ``label(text)`` adds an interstitial) stack;
- ``cap(key, n)``: among the candidates the rule matches, at most ``n`` per value of ``key``
  (creator, topic, ...) stay in the slate, the highest-ranked after demotions;
- MISSING follows the rule's ``on_missing``: ``fail_closed`` drops the candidate (at the rule's
  position in the order), ``skip`` does not fire;
- a surface is fail-closed by default: a candidate with none of the labels the surface's rules
  read is dropped before any rule runs, so no unlabeled candidate is served there;
- ``rollout`` acts on a stable hash of the subject id (the rule is recorded as shadow for subjects
  outside the rollout), ``shadow`` rules are decided and recorded, never acted on;
- the deadline budget: if the label read or the rules would end after the request's deadline, the
  outcomes are MISSING and the fail-closed path serves;
- a label store that is down, slow or returns garbage gives MISSING labels and a breaker failure,
  never an exception to the caller.

Bundles reload atomically: the guard holds a reference to an immutable :class:`CompiledBundle`;
each request reads that reference once, so a slate is decided by exactly one bundle version, which
every decision records.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
import zlib
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.errors import BadInput
from assay.guard import candidates as cand_mod
from assay.guard.breakers import BreakerRegistry, CallOutcome, Fallback, State
from assay.guard.candidates import LABEL_PREFIX, Candidates, _inferred
from assay.records import Decision, Event

try:
    from assay.guard import _native
except ImportError:  # pragma: no cover - exercised where the extension could not be built
    _native = None

NATIVE = _native is not None  # the C rule resolution and cap grouping (src/assay/guard/_native.c)

OUT_FALSE, OUT_TRUE, OUT_MISSING = 0, 1, 2
K_DROP, K_ALLOW, K_DEMOTE, K_LABEL, K_CAP = 0, 1, 2, 3, 4
_KINDS = {"drop": K_DROP, "allow": K_ALLOW, "demote": K_DEMOTE, "label": K_LABEL, "cap": K_CAP}
# codes in Slate.hard_rule beyond rule indices
UNLABELED = -2
BREAKER = -3
BUDGET = -4


@dataclass(frozen=True)
class RuleSpec:
    """What the guard needs of one rule, resolved once per bundle load (not per request)."""

    index: int
    id: str
    kind: int
    factor: float
    text: str
    key: str
    limit: int
    fail_closed: bool
    shadow: bool
    rollout: float
    reason: str


@dataclass(frozen=True)
class CompiledSurface:
    surface: str
    compiled: Any  # assay.policy CompiledRules
    specs: tuple[RuleSpec, ...]
    item_attrs: dict[str, Any]  # attribute name -> AttrType, item.* read by the rules
    request_attrs: tuple[str, ...]
    label_names: tuple[str, ...]  # the X of item.labels.X read by the rules
    vectors: RuleVectors
    partial_rollout: tuple[int, ...]  # rules with 0 < rollout < 100 (hashed per subject)
    cap_rules: tuple[int, ...]
    # the label and cap rules as index arrays: their rows of the resolution's soft matrix
    label_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    cap_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    label_texts: tuple[str, ...] = ()
    # item_attrs sorted out once for building a request's batch (see Guard._batch): (attribute,
    # label) for item.labels.X; (attribute, candidate field, type kind, list element) for the rest;
    # (attribute, path under the request) for request.*
    label_attrs: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)
    field_attrs: tuple[tuple[str, str, str | None, str | None], ...] = field(init=False, repr=False, compare=False)
    request_paths: tuple[tuple[str, tuple[str, ...]], ...] = field(init=False, repr=False, compare=False)
    label_columns: tuple[str, ...] = field(init=False, repr=False, compare=False)  # labels.X per label_names

    def __post_init__(self) -> None:
        labels, fields = [], []
        for attr, t in self.item_attrs.items():
            path = attr[len("item."):]
            if path.startswith("labels."):
                labels.append((attr, path[len("labels."):]))
            else:
                fields.append((attr, path, getattr(t, "kind", None), getattr(t, "elem", None)))
        object.__setattr__(self, "label_attrs", tuple(labels))
        object.__setattr__(self, "field_attrs", tuple(fields))
        object.__setattr__(self, "request_paths", tuple((a, tuple(a.split(".")[1:])) for a in self.request_attrs))
        object.__setattr__(self, "label_columns", tuple(LABEL_PREFIX + name for name in self.label_names))


@dataclass(frozen=True)
class RuleVectors:
    """Per-rule facts as arrays, read by the C resolution (kinds, fail_closed, live, factor)."""

    live: np.ndarray  # not shadow and rollout > 0 (partial rollouts are refined per subject)
    fail_closed: np.ndarray
    factor: np.ndarray  # the demote factor, 1.0 for other rules
    kinds: np.ndarray  # int8 K_* per rule

    @staticmethod
    def of(specs: tuple[RuleSpec, ...]) -> RuleVectors:
        def arr(f, dtype=bool):
            return np.array([f(sp) for sp in specs], dtype=dtype).reshape(len(specs))

        return RuleVectors(
            live=arr(lambda sp: not sp.shadow and sp.rollout > 0), fail_closed=arr(lambda sp: sp.fail_closed),
            factor=arr(lambda sp: sp.factor if sp.kind == K_DEMOTE else 1.0, np.float64), kinds=arr(lambda sp: sp.kind, np.int8),
        )


@dataclass(frozen=True)
class CompiledBundle:
    """An immutable, compiled bundle: what one request is decided by."""

    bundle: Any
    version: str
    hash: str
    surfaces: dict[str, CompiledSurface]

    def surface(self, name: str) -> CompiledSurface:
        s = self.surfaces.get(name)
        if s is None:
            known = ", ".join(sorted(self.surfaces)) or "(none)"
            raise BadInput(f"unknown surface {name!r}; bundle {self.bundle.name} {self.version} has rules for: {known}")
        return s


def _rule_attributes(bundle: Any, rule: Any) -> tuple[str, ...]:
    try:
        return tuple(bundle.compiled("rules", rule.id).attributes)
    except (AttributeError, KeyError):  # an older policy build: every declared attribute
        return tuple(bundle.attributes.get("rules", {}))


def compile_bundle(bundle: Any, extra_surfaces: tuple[str, ...] = ()) -> CompiledBundle:
    """Compile every surface the bundle names (plus ``extra_surfaces``) before it serves."""
    decls = bundle.attributes.get("rules", {})
    surfaces: dict[str, CompiledSurface] = {}
    for name in sorted(set(bundle.surfaces()) | set(extra_surfaces)):
        compiled = bundle.compile_rules(name)
        rules = list(compiled.rules)
        specs = []
        reads: set[str] = set()
        for i, r in enumerate(rules):
            a = r.action
            specs.append(RuleSpec(
                index=i, id=r.id, kind=_KINDS[a.kind], factor=float(a.factor if a.factor is not None else 1.0),
                text=a.text or "", key=a.key or "", limit=int(a.limit or 0),
                fail_closed=(r.on_missing != "skip"), shadow=bool(r.shadow), rollout=float(r.rollout), reason=r.reason or "",
            ))
            reads.update(_rule_attributes(bundle, r))
        item_attrs = {a: decls.get(a) for a in sorted(reads) if a.startswith("item.")}
        request_attrs = tuple(sorted(a for a in reads if a.startswith("request.")))
        labels = tuple(sorted(a[len("item.labels."):] for a in item_attrs if a.startswith("item.labels.")))
        specs_t = tuple(specs)
        surfaces[name] = CompiledSurface(
            name, compiled, specs_t, item_attrs, request_attrs, labels, RuleVectors.of(specs_t),
            partial_rollout=tuple(sp.index for sp in specs_t if 0 < sp.rollout < 100 and not sp.shadow),
            cap_rules=tuple(sp.index for sp in specs_t if sp.kind == K_CAP),
            label_rows=np.array([sp.index for sp in specs_t if sp.kind == K_LABEL], dtype=np.int64),
            cap_rows=np.array([sp.index for sp in specs_t if sp.kind == K_CAP], dtype=np.int64),
            label_texts=tuple(sp.text for sp in specs_t if sp.kind == K_LABEL),
        )
    return CompiledBundle(bundle, str(bundle.version), str(bundle.hash), surfaces)


_ABSENT = object()


def _group_ordinals(values: np.ndarray) -> np.ndarray:
    """For values in rank order, how many earlier values are equal: 0 for the best of each creator
    (topic, ...), 1 for the next, ... — what a cap compares with its limit. One pass driven by
    ``map()`` over a dict of ``itertools.count`` per value (no Python loop body, no sort); absent
    values (None, NaN) are one group."""
    kind = values.dtype.kind
    if kind == "U" and len(values):
        ordinals = _fixed_width_ordinals(values)
        if ordinals is not None:
            return ordinals
    keys = values.tolist()
    if kind == "f" or (kind == "O" and _inferred(values) != "string"):  # all strings: nothing absent
        if kind == "f":
            absent = np.isnan(values)
        else:
            import pandas as pd

            absent = pd.isna(values)
        if absent.any():
            for i in np.flatnonzero(absent).tolist():
                keys[i] = _ABSENT
    counters: defaultdict[Any, itertools.count] = defaultdict(itertools.count)
    return np.fromiter(map(next, map(counters.__getitem__, keys)), dtype=np.int64, count=len(keys))


def _cap_ordinals(column: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``_group_ordinals(column[positions])``: for a fixed-width string column, grouped in C by
    exact bytes (a hash table, no sort and no copy of the rows)."""
    if NATIVE and column.dtype.kind == "U" and column.dtype.itemsize and column.flags.c_contiguous:
        out = np.empty(len(positions), dtype=np.int64)
        _native.group_ordinals(column, column.dtype.itemsize, np.ascontiguousarray(positions, dtype=np.int64), out)
        return out
    if NATIVE and column.dtype == object:  # Python strings (JSON): grouped by their own hashes
        out = np.empty(len(positions), dtype=np.int64)
        if _native.group_ordinals_str(column.tolist(), np.ascontiguousarray(positions, dtype=np.int64), out) >= 0:
            return out
    if column.dtype == object and _inferred(column) == "mixed":  # lists among the values: grouped as tuples
        return _group_ordinals(_hashable(column, positions))
    return _group_ordinals(column[positions])


_ROW_WEIGHTS: dict[int, np.ndarray] = {}


def _fixed_width_ordinals(values: np.ndarray) -> np.ndarray | None:
    """``_group_ordinals`` for a fixed-width string array without making a Python string per value
    (pandas and Arrow both box or convert each one first, which costs more than the whole cap).
    Each row's UCS-4 code points are folded into one 64-bit key (a dot product with fixed odd
    weights, wrapping), rows are grouped by a stable sort of the keys, and every row is then
    compared with the first row of its group: the grouping is exact, and None (the caller takes
    the per-value path) if two different strings ever shared a key."""
    n = len(values)
    width = values.dtype.itemsize // 4
    if not width:
        return np.arange(n)  # all empty strings: one group
    weights = _ROW_WEIGHTS.get(width)
    if weights is None:
        weights = np.random.default_rng(width).integers(1, 2**63, width, dtype=np.uint64) | np.uint64(1)
        _ROW_WEIGHTS[width] = weights
    codes = values.view(np.uint32).reshape(n, width)
    keys = codes.astype(np.uint64) @ weights
    order = np.argsort(keys, kind="stable")  # rank order kept within a group
    sorted_keys = keys[order]
    starts = np.empty(n, dtype=bool)
    starts[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=starts[1:])
    idx = np.arange(n)
    first_of_group = np.maximum.accumulate(np.where(starts, idx, 0))
    later = np.flatnonzero(~starts)  # a group's first row has nothing to be compared with
    if not (values[order[later]] == values[order[first_of_group[later]]]).all():
        return None
    ordinals = np.empty(n, dtype=np.int64)
    ordinals[order] = idx - first_of_group
    return ordinals


def _factorize(values: np.ndarray, with_uniques: bool = False):
    """Integer codes per distinct value, numbered in order of first appearance; None is a value of
    its own. Strings (fixed-width or Python str) are grouped by the extension's hash table, which
    pandas' factorize is the twin of (it boxes every fixed-width value and costs a few tens of
    microseconds more per call); anything else by pandas. Absent values (None, NaN) come back as
    None among the uniques."""
    n = len(values)
    if NATIVE and n and ((values.dtype.kind == "U" and values.dtype.itemsize and values.flags.c_contiguous) or values.dtype == object):
        codes, ordinals, positions = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64), np.arange(n, dtype=np.int64)
        if values.dtype.kind == "U":
            groups = _native.group_ordinals(values, values.dtype.itemsize, positions, ordinals, codes)
        else:
            groups = _native.group_ordinals_str(values.tolist(), positions, ordinals, codes)
        if groups >= 0:
            if not with_uniques:
                return codes
            uniques = np.empty(groups, dtype=object)
            uniques[:] = values[ordinals == 0].tolist()  # each group's first row, in order
            return codes, uniques
    import pandas as pd

    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    codes = np.asarray(codes, dtype=np.int64)
    if not with_uniques:
        return codes
    uniques = np.asarray(uniques, dtype=object)
    uniques[pd.isna(uniques)] = None  # pandas gives NaN for None: absent either way
    return codes, uniques


def _warm_imports() -> None:
    """Import what the first request would otherwise import inside its deadline budget."""
    import pandas
    import pandas.api.types  # noqa: F401
    import pyarrow
    import pyarrow.compute  # noqa: F401  (list columns are converted by Arrow)


def _all_strings(values: np.ndarray) -> bool:
    return _inferred(values) == "string"


_NUMBERS = frozenset(("floating", "integer", "mixed-integer-float"))


def _typed(col: np.ndarray, kind: str) -> np.ndarray | None:
    """An object column whose values are all of the declared type (no None) as a typed array,
    decided by pandas' C type inference; None otherwise (the per-value path then decides). A
    string holding NUL stays an object column: a fixed-width array would strip a trailing NUL."""
    inferred = _inferred(col)
    try:
        if kind == "string" and inferred == "string":
            return col.astype(str) if "\x00" not in "".join(col.tolist()) else None
        if kind == "int" and inferred == "integer":
            return col.astype(np.int64)
        if kind == "bool" and inferred == "boolean":
            return col.astype(np.bool_)
        if kind == "double" and inferred in _NUMBERS:
            return col.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    return None


_LIST_ROW_TYPES = frozenset((list, tuple, type(None)))


def _clean_str_objects(values: list) -> bool:
    """Every value is a str with no NUL and no lone surrogate: what the policy library accepts as
    a string, so such a column (what JSON decodes to) passes on as it is, without a fixed-width
    copy. One C pass with the extension; this is its twin."""
    if NATIVE:
        return _native.clean_str_objects(values)
    if set(map(type, values)) - {str}:
        return False
    joined = "".join(values)
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return "\x00" not in joined


def _string_lists(col: np.ndarray):
    """Rows of Python string lists (None = missing) as the policy library's ``ListValues`` (the
    flat str values, checked clean, plus offsets) and a missing mask, checked with C-level passes
    (``map``, ``set``, ``chain``) instead of a Python loop per row. None when any row is not a
    clean list of ``str`` (a bare string, a number, a None element, a NUL, a lone surrogate): the
    policy library's own per-row path then decides, and marks such rows missing."""
    from itertools import chain

    from assay.policy.batch import ListValues

    n = len(col)
    rows = col.tolist()
    if NATIVE:  # the same checks and layout in one C pass
        offsets, null_bytes = np.empty(n + 1, dtype=np.int64), np.empty(n, dtype=np.uint8)
        flat = _native.str_lists(rows, offsets, null_bytes)
        if flat is None:
            return None
        values = np.empty(len(flat), dtype=object)
        values[:] = flat
        nulls = null_bytes.view(bool)
        return ListValues(values, offsets, clean=True), (nulls if nulls.any() else None)
    row_types = set(map(type, rows))
    if not row_types <= _LIST_ROW_TYPES:
        return None
    nulls = None
    if type(None) in row_types:
        nulls = np.fromiter(map(_is_none, rows), dtype=bool, count=n)
        rows = [() if r is None else r for r in rows]
    flat = list(chain.from_iterable(rows))
    if not _clean_str_objects(flat):
        return None
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, rows), dtype=np.int64, count=n), out=offsets[1:])
    values = np.empty(len(flat), dtype=object)
    values[:] = flat
    return ListValues(values, offsets, clean=True), nulls


def _hashable(col: Any, positions: np.ndarray) -> np.ndarray:
    """The values at ``positions`` of a column that may hold lists (a numpy object column, or an
    Arrow list column), with each list as a tuple so it can be a cap's group key."""
    values = col.take(positions).to_pylist() if not isinstance(col, np.ndarray) else col[positions].tolist()
    out = np.empty(len(values), dtype=object)
    out[:] = [tuple(v) if isinstance(v, (list, np.ndarray)) else v for v in values]
    return out


def _is_none(x: Any) -> bool:
    return x is None


@dataclass(slots=True)
class Resolution:
    """What a surface's rules decide for each candidate, from the rule outcomes: the deciding
    hard rule (the first drop/allow that acts, or any rule failing closed), and the soft rules
    (demote, label, cap) acting before it. ``outcomes``, ``fail_closed``, ``live`` and
    ``pre_dropped`` are kept so what matched can be derived when records are built."""

    first: np.ndarray  # int32 (n,): the deciding hard rule, len(rules) when none
    failed_closed: np.ndarray  # bool (n,): it decided by failing closed
    dropped: np.ndarray  # bool (n,): by the deciding rule, or before any rule ran
    action: np.ndarray  # int8 (n,): K_DROP, else K_DEMOTE, K_LABEL, K_ALLOW by what acted
    factor: np.ndarray  # float64 (n,): the acting demote factors multiplied in rule order
    soft: np.ndarray  # bool (rules, n): a soft rule acting before the deciding one
    outcomes: np.ndarray  # int8 (rules, n)
    fail_closed: np.ndarray  # bool (rules,)
    live: np.ndarray  # bool (rules,)
    pre_dropped: np.ndarray  # bool (n,)

    def matched(self) -> np.ndarray:
        """(rules, n): TRUE, or MISSING on a fail-closed rule; nothing matches a pre-dropped candidate."""
        matched = (self.outcomes == OUT_TRUE) | ((self.outcomes == OUT_MISSING) & self.fail_closed[:, None])
        return matched & ~self.pre_dropped


def resolve(surface: CompiledSurface, outcomes: np.ndarray, live: np.ndarray, pre_dropped: np.ndarray, *,
            native: bool | None = None) -> Resolution:
    """One walk down each candidate's rules in C (``_native.resolve``), or the policy library's
    whole-matrix resolution when the extension is not built (``native=False`` forces that twin);
    the two are tested equal."""
    v = surface.vectors
    n_rules, n = outcomes.shape
    outcomes = np.ascontiguousarray(outcomes, dtype=np.int8)
    pre_dropped = np.ascontiguousarray(pre_dropped, dtype=bool)
    if (NATIVE if native is None else native) and n:
        first = np.empty(n, dtype=np.int32)
        failed, dropped = np.empty(n, dtype=bool), np.empty(n, dtype=bool)
        action, factor = np.empty(n, dtype=np.int8), np.empty(n)
        soft = np.zeros((n_rules, n), dtype=bool)
        _native.resolve(outcomes, v.kinds, v.fail_closed, np.ascontiguousarray(live, dtype=bool), pre_dropped, v.factor,
                        first, failed, dropped, action, factor, soft)
        return Resolution(first, failed, dropped, action, factor, soft, outcomes, v.fail_closed, live, pre_dropped)
    # the twin is the policy library's own resolution (what `policy test` and explanations use),
    # with the candidates dropped before any rule matching nothing
    from assay.policy.decide import resolve as policy_resolve

    if pre_dropped.any():
        outcomes_seen = np.where(pre_dropped[None, :], np.int8(OUT_FALSE), outcomes)
    else:
        outcomes_seen = outcomes
    p = policy_resolve(list(surface.compiled.rules), outcomes_seen, np.asarray(live, dtype=bool)[:, None])
    decided = p.deciding >= 0
    first = np.where(decided, p.deciding, n_rules).astype(np.int32)
    soft = p.acting.copy()  # what acted, less the deciding rule itself
    soft[p.deciding[decided], np.flatnonzero(decided)] = False
    action = _POLICY_ACTIONS[p.action]
    dropped = pre_dropped | (action == K_DROP)
    action[dropped] = K_DROP
    return Resolution(first, np.asarray(p.fail_closed, dtype=bool), dropped, action, np.asarray(p.factor, dtype=np.float64),
                      soft, outcomes, v.fail_closed, live, pre_dropped)


def _by_candidate(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(candidate, rule) of every True cell of a (rules, n) matrix, ordered by candidate, then
    rule: flat positions in a transposed copy (np.nonzero on the transposed view is ~3x slower)."""
    rules = matrix.shape[0]
    flat = np.flatnonzero(np.ascontiguousarray(matrix.T))
    cand = flat // rules
    return cand, flat - cand * rules


_POLICY_ACTIONS = np.array([K_ALLOW, K_DROP, K_DEMOTE, K_LABEL], dtype=np.int8)  # policy.decide's codes -> K_*


def freeze_startup_heap() -> None:
    """Put everything allocated while starting (the compiled bundle, the label tables, imported
    libraries) out of the cyclic garbage collector's reach (``gc.freeze``). A full collection
    then scans only what serving allocates, instead of pausing one request in a few hundred for
    the whole heap: the guard's server and stream worker call this once they are built."""
    import gc

    gc.collect()
    gc.freeze()


def _in_rollout(rule_id: str, subject_id: str, percent: float) -> bool:
    """Stable across processes and restarts (crc32, not Python's salted hash)."""
    if percent >= 100.0:
        return True
    if percent <= 0.0:
        return False
    bucket = zlib.crc32(f"{rule_id}\x00{subject_id}".encode()) % 10000
    return bucket < percent * 100.0


@dataclass
class Slate:
    """The re-ranked slate, and everything needed to write one decision per candidate.

    The per-candidate facts are kept as columns; :attr:`decisions` turns them into
    :class:`assay.records.Decision` records on first use (the decision queue does that off the
    serving path, so serving does not pay for 1,000 Python objects per request).
    """

    request_id: str
    ts: float
    surface: str
    subject_id: str
    bundle_version: str
    bundle_hash: str
    item_ids: list[str]  # served, best first
    scores: np.ndarray  # served scores after demotions
    item_labels: dict[str, tuple[str, ...]]  # served item id -> interstitial labels
    breaker_state: str = "closed"
    fallback: str | None = None
    model_versions: tuple[str, ...] = ()
    # per candidate, in the order given
    candidate_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    scores_before: np.ndarray = field(default_factory=lambda: np.empty(0))
    scores_after: np.ndarray = field(default_factory=lambda: np.empty(0))
    rank_after: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    action: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int8))  # K_* codes
    hard_rule: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))
    # what the rules decided, kept as computed; acting/shadowed are derived only when records are built
    _resolution: Resolution | None = None
    failed_closed: np.ndarray | None = None
    specs: tuple[RuleSpec, ...] = ()
    breaker_scope: dict[int, str] = field(default_factory=dict)  # candidate -> breaker that dropped it
    breaker_states: dict[int, str] = field(default_factory=dict)  # candidate -> that breaker's state (open, forced_open, ...)
    fallback_ids: list[str] = field(default_factory=list)  # items served from a fallback, not candidates
    notes: tuple[str, ...] = ()
    _decisions: tuple[Decision, ...] | None = None

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def acting(self) -> np.ndarray | None:
        """(rules, n) bool: the rule acted on the candidate (it matched, is live, and came no later
        than the deciding hard rule)."""
        res = self._resolution
        if res is None:
            return None
        acting = res.soft.copy()
        decided = np.flatnonzero(res.first < len(acting))
        acting[res.first[decided], decided] = True
        return acting

    @property
    def shadowed(self) -> np.ndarray | None:
        """(rules, n) bool: matched by a shadow rule or a rule outside its rollout."""
        res = self._resolution
        if res is None or res.live.all():
            return None
        return res.matched() & ~res.live[:, None]

    @property
    def n_candidates(self) -> int:
        return len(self.candidate_ids)

    @property
    def dropped(self) -> int:
        return int(((self.action == K_DROP) | (self.action == K_CAP)).sum())

    @property
    def decisions(self) -> tuple[Decision, ...]:
        if self._decisions is None:
            self._decisions = tuple(self._build_decisions())
        return self._decisions

    def _build_decisions(self) -> list[Decision]:
        n = self.n_candidates
        specs = self.specs
        acted: list[list[int]] = [[] for _ in range(n)]
        shadowed: list[list[int]] = [[] for _ in range(n)]
        if self.acting is not None:
            for r, i in zip(*np.nonzero(self.acting), strict=True):
                if specs[r].kind != K_CAP:  # a cap rule is named only where it removed the item
                    acted[i].append(int(r))
        if self.shadowed is not None:
            for r, i in zip(*np.nonzero(self.shadowed), strict=True):
                shadowed[i].append(int(r))
        names = {K_DROP: "drop", K_ALLOW: "allow", K_DEMOTE: "demote", K_LABEL: "label", K_CAP: "cap"}
        out = []
        for i in range(n):
            h = int(self.hard_rule[i])
            rule_ids: list[str] = []
            reasons: list[str] = []
            rules = sorted(set(acted[i]) | ({h} if h >= 0 else set()))
            for r in rules:
                rule_ids.append(specs[r].id)
                fc = self.failed_closed is not None and self.failed_closed[i] and r == h
                reasons.append(f"fail-closed: {specs[r].id} could not be evaluated (missing labels or budget)" if fc else specs[r].reason)
            if h == UNLABELED:
                rule_ids.append("guard:unlabeled")
                reasons.append("no labels for this item on a fail-closed surface")
            elif h == BUDGET:
                rule_ids.append("guard:deadline")
                reasons.append("deadline budget exhausted before the rules ran (fail-closed)")
            elif h == BREAKER:
                scope = self.breaker_scope.get(i, "breaker")
                rule_ids.append(f"breaker:{scope}")
                reasons.append(f"circuit breaker {scope} is open" + (f"; fallback {self.fallback}" if self.fallback else ""))
            rank = int(self.rank_after[i])
            out.append(Decision(
                request_id=self.request_id, ts=self.ts, surface=self.surface, subject_id=self.subject_id,
                item_id=str(self.candidate_ids[i]), rank_before=i, rank_after=rank, action=names[int(self.action[i])],
                rule_ids=tuple(rule_ids), reasons=tuple(reasons),
                shadow_rule_ids=tuple(specs[r].id for r in sorted(set(shadowed[i]))),
                bundle_hash=self.bundle_hash, bundle_version=self.bundle_version, model_versions=self.model_versions,
                breaker_state=(self.breaker_states.get(i, "open") if h == BREAKER else self.breaker_state),
                score_before=float(self.scores_before[i]),
                score_after=(float(self.scores_after[i]) if rank >= 0 else None),
            ))
        for k, item_id in enumerate(self.fallback_ids):
            pos = self.item_ids.index(item_id) if item_id in self.item_ids else -1
            out.append(Decision(
                request_id=self.request_id, ts=self.ts, surface=self.surface, subject_id=self.subject_id,
                item_id=item_id, rank_before=-1, rank_after=pos, action="allow",
                rule_ids=(f"fallback:{self.fallback}",), reasons=(f"served from fallback {self.fallback} (item {k})",),
                bundle_hash=self.bundle_hash, bundle_version=self.bundle_version, model_versions=self.model_versions,
                breaker_state=self.breaker_state, score_after=float(self.scores[pos]) if pos >= 0 else None,
            ))
        return out

    def _breaker_state_column(self, hard_rule: np.ndarray) -> np.ndarray:
        """Per candidate: the state of the breaker that dropped it, else the request's state."""
        out = np.full(len(hard_rule), self.breaker_state, dtype=object)
        for i in np.flatnonzero(hard_rule == BREAKER):
            out[i] = self.breaker_states.get(int(i), "open")
        return out

    def to_arrow(self):
        """The decisions as one Arrow table in the trace's decision columns, built column-wise
        (no per-candidate Python objects): what ``TraceLog.append_table`` takes. Row for row the
        same as :attr:`decisions`."""
        import pyarrow as pa

        n = self.n_candidates
        specs = self.specs
        n_rules = len(specs)
        h = self.hard_rule
        names = np.array(["drop", "allow", "demote", "label", "cap"], dtype=object)
        # which rules to name per candidate: those that acted (a cap only where it removed the item)
        full = np.zeros((n_rules + 3, n), dtype=bool)
        if self.acting is not None and n_rules:
            full[:n_rules] = self.acting
            caps = [sp.index for sp in specs if sp.kind == K_CAP]
            if caps:
                full[caps, :] = False
        decided = np.flatnonzero(h >= 0)
        full[h[decided], decided] = True
        full[n_rules] = h == UNLABELED
        full[n_rules + 1] = h == BUDGET
        full[n_rules + 2] = h == BREAKER
        cand, rule = _by_candidate(full)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(cand, minlength=n), out=offsets[1:])
        ids = np.array([sp.id for sp in specs] + ["guard:unlabeled", "guard:deadline", ""], dtype=object)
        reasons = np.array([sp.reason for sp in specs] + ["no labels for this item on a fail-closed surface",
                                                          "deadline budget exhausted before the rules ran (fail-closed)", ""], dtype=object)
        string = pa.string()
        fc_rows = np.empty(0, dtype=np.int64)
        if self.failed_closed is not None and len(rule):
            fc_rows = np.flatnonzero(self.failed_closed[cand] & (rule == h[cand]))
        breaker_rows = np.flatnonzero(rule == n_rules + 2)
        if not len(fc_rows) and not len(breaker_rows):
            # the usual case: every name and reason is the rule's own, gathered by Arrow in C
            rule_array = pa.array(ids.tolist(), type=string).take(rule)
            reason_array = pa.array(reasons.tolist(), type=string).take(rule)
        else:
            rule_values = ids[rule]
            reason_values = reasons[rule]
            for k in fc_rows:
                reason_values[k] = f"fail-closed: {ids[rule[k]]} could not be evaluated (missing labels or budget)"
            for k in breaker_rows:
                scope = self.breaker_scope.get(int(cand[k]), "breaker")
                rule_values[k] = f"breaker:{scope}"
                reason_values[k] = f"circuit breaker {scope} is open" + (f"; fallback {self.fallback}" if self.fallback else "")
            rule_array, reason_array = pa.array(rule_values, type=string), pa.array(reason_values, type=string)
        s_offsets = np.zeros(n + 1, dtype=np.int32)
        if self.shadowed is not None and n_rules:
            s_cand, s_rule = _by_candidate(self.shadowed)
            np.cumsum(np.bincount(s_cand, minlength=n), out=s_offsets[1:])
            shadow_values = pa.array(ids.tolist(), type=string).take(s_rule)
        else:
            shadow_values = pa.array([], type=string)
        served = self.rank_after >= 0

        def same(value: Any, type_: Any = string):  # one value for every row, repeated in C
            return pa.repeat(pa.scalar(value, type=type_), n)

        cols: dict[str, Any] = {
            "request_id": same(self.request_id), "ts": pa.array(np.full(n, self.ts)), "surface": same(self.surface),
            "subject_id": same(self.subject_id), "item_id": pa.array(self.candidate_ids.astype(object), type=string),
            "rank_before": pa.array(np.arange(n, dtype=np.int64)), "rank_after": pa.array(self.rank_after.astype(np.int64)),
            "action": pa.array(names.tolist(), type=string).take(self.action.astype(np.int64)),
            "rule_ids": pa.ListArray.from_arrays(offsets, rule_array),
            "reasons": pa.ListArray.from_arrays(offsets, reason_array),
            "shadow_rule_ids": pa.ListArray.from_arrays(s_offsets, shadow_values),
            "bundle_hash": same(self.bundle_hash), "bundle_version": same(self.bundle_version),
            "model_versions": pa.ListArray.from_arrays(  # the request's versions on every row
                pa.array(np.arange(n + 1, dtype=np.int32) * len(self.model_versions)),
                pa.array(list(self.model_versions), type=string).take(np.tile(np.arange(len(self.model_versions)), n))),
            "breaker_state": (pa.array(self._breaker_state_column(h), type=string) if len(breaker_rows) or (h == BREAKER).any()
                              else same(self.breaker_state)),
            "score_before": pa.array(self.scores_before.astype(np.float64)),
            "score_after": pa.array(self.scores_after.astype(np.float64), mask=~served),
            "attribution": pa.nulls(n, string),
        }
        table = pa.table(cols)
        if self.fallback_ids:
            extra = [d.to_dict() for d in self.decisions[n:]]
            for row in extra:
                row["attribution"] = None
            table = pa.concat_tables([table, pa.Table.from_pylist(extra, schema=table.schema)])
        return table

    def to_dict(self, *, decisions: bool = False) -> dict[str, Any]:
        items = [{"id": item_id, "score": score} for item_id, score in zip(self.item_ids, self.scores.tolist(), strict=True)]
        if self.item_labels:  # few items carry labels: find them by id rather than test every item
            at = dict(zip(self.item_ids, range(len(items)), strict=True))
            for item_id, labels in self.item_labels.items():
                if labels and item_id in at:
                    items[at[item_id]]["labels"] = list(labels)
        out: dict[str, Any] = {
            "request_id": self.request_id, "surface": self.surface, "bundle_version": self.bundle_version,
            "bundle_hash": self.bundle_hash, "breaker_state": self.breaker_state, "fallback": self.fallback,
            "items": items, "candidates": self.n_candidates, "dropped": self.dropped,
        }
        if self.notes:
            out["notes"] = list(self.notes)
        if decisions:
            out["decisions"] = [d.to_dict() for d in self.decisions]
        return out


@dataclass
class GuardConfig:
    deadline_ms: float = 50.0
    # per surface: "fail_closed" (default) drops unlabeled candidates; "fail_open" lets rules decide
    surface_modes: dict[str, str] = field(default_factory=dict)
    default_mode: str = "fail_closed"
    extra_surfaces: tuple[str, ...] = ()  # surfaces served by bundle-wide rules only
    fallbacks: dict[str, Fallback] = field(default_factory=dict)  # breaker scope (or kind) -> fallback
    cache_safe_slates: bool = True
    cached_slates_max: int = 10000  # subjects whose last safe slate is kept for a cached_slate fallback

    def __post_init__(self) -> None:
        for s, m in {**self.surface_modes, "(default)": self.default_mode}.items():
            if m not in ("fail_closed", "fail_open"):
                raise BadInput(f"surface mode for {s!r} must be fail_closed or fail_open, got {m!r}")
        if not self.deadline_ms > 0:
            raise BadInput(f"deadline_ms must be positive, got {self.deadline_ms}")


class Guard:
    """Applies a policy bundle's serving rules to candidate batches. Thread-safe."""

    def __init__(self, bundle: Any, labels: Any = None, *, config: GuardConfig | None = None,
                 breakers: BreakerRegistry | None = None, sink: Callable[[Any], Any] | None = None,
                 clock: Callable[[], float] = time.time):
        self.config = config or GuardConfig()
        self.labels = labels
        self.breakers = breakers or BreakerRegistry()
        if sink is not None and not hasattr(sink, "submit"):
            from assay.guard.sink import DecisionQueue

            sink = DecisionQueue(sink)
        self.sink = sink
        self._clock = clock
        self._state: CompiledBundle = compile_bundle(bundle, self.config.extra_surfaces)
        _warm_imports()
        self._safe_slates: dict[str, tuple[list[str], np.ndarray]] = {}  # seeded, per surface
        self._subject_slates: dict[tuple[str, str], tuple[list[str], np.ndarray]] = {}
        self.events: deque[Event] = deque(maxlen=1000)
        self.breakers.add_listener(self._on_event)
        self.counters = {"requests": 0, "label_store_errors": 0, "label_store_timeouts": 0, "budget_exhausted": 0,
                         "fallbacks": 0, "garbage_labels": 0}

    # -- bundle --------------------------------------------------------------------------------
    @property
    def bundle(self) -> CompiledBundle:
        return self._state

    def swap(self, bundle: Any) -> CompiledBundle:
        """Compile ``bundle`` completely, then switch to it with one reference assignment.
        Requests in flight finish on the bundle they started with."""
        new = compile_bundle(bundle, self.config.extra_surfaces)
        self._state = new
        return new

    def _on_event(self, event: Event) -> None:
        event = Event(event.kind, event.ts, event.subject, event.payload, self._state.hash)
        self.events.append(event)
        if self.sink is not None:
            with contextlib.suppress(Exception):  # a full or broken sink never fails serving
                self.sink(event)

    # -- feedback ------------------------------------------------------------------------------
    def report_harmful(self, *, item_id: str, source: str | None = None, model_version: str | None = None,
                       surface: str | None = None, creator: str | None = None, severe: bool = False) -> dict[str, str]:
        """A served candidate was later found harmful: a failure against the breaker of every scope
        named (whatever that breaker's failure predicate counts), never a success; ``severe`` also
        counts toward the absolute-count trip. Returns the state of each breaker reached."""
        if not isinstance(item_id, str) or not item_id:
            raise BadInput("harm report: item_id must be a non-empty string")
        if not isinstance(severe, bool):
            raise BadInput(f"harm report: severe must be true or false, got {severe!r}")
        scopes = []
        for kind, name in (("source", source), ("model", model_version), ("surface", surface), ("creator", creator)):
            if name is None:
                continue
            if not isinstance(name, str) or not name:
                raise BadInput(f"harm report: {kind} must be a non-empty string, got {name!r}")
            scopes.append(f"{kind}:{name}")
        return self.breakers.report(scopes, severe=severe, reason=f"{'severe ' if severe else ''}harm report on {item_id}")

    def set_safe_slate(self, surface: str, item_ids: list[str], scores: list[float] | None = None, *,
                       sources: list[str | None] | None = None, creators: list[str | None] | None = None) -> None:
        """Seed the cached safe slate a ``cached_slate`` fallback serves. With each item's source and
        creator given, items of an open source or creator are left out when it is served."""
        s = np.asarray(scores if scores is not None else np.linspace(1.0, 0.0, len(item_ids), endpoint=False), dtype=np.float64)
        scopes = {k: list(v) for k, v in (("source", sources), ("creator", creators)) if v is not None}
        for k, v in scopes.items():
            if len(v) != len(item_ids):
                raise BadInput(f"safe slate: {len(v)} {k}s for {len(item_ids)} items")
        self._safe_slates[surface] = (list(item_ids), s, scopes)

    def _fallback_for(self, scope: str) -> Fallback:
        fb = self.config.fallbacks.get(scope) or self.config.fallbacks.get(scope.split(":", 1)[0])
        if fb is None:
            policy = self.breakers.policy(scope)
            fb = policy.fallback if policy is not None else Fallback("cached_slate")
        return fb

    # -- serving -------------------------------------------------------------------------------
    def apply(self, request: dict[str, Any], candidates: Any, *, evaluator: str = "compiled") -> Slate:
        """Decide one request. ``request``: ``{"request_id", "surface", "user": {"id", ...},
        "deadline_ms", "model_version"}``; ``candidates``: columns or a list of dicts."""
        started = time.perf_counter()
        state = self._state  # read once: this request is decided by this bundle only
        if not isinstance(request, dict):
            raise BadInput(f"request must be an object, got {type(request).__name__}")
        surface_name = request.get("surface")
        if not isinstance(surface_name, str) or not surface_name:
            raise BadInput("request: 'surface' must name a surface, e.g. \"for_you\"")
        surface = state.surface(surface_name)
        cands = cand_mod.coerce(candidates)
        deadline_ms = request.get("deadline_ms", self.config.deadline_ms)
        if isinstance(deadline_ms, bool) or not isinstance(deadline_ms, (int, float)) or not deadline_ms > 0:
            raise BadInput(f"request: 'deadline_ms' must be a positive number, got {deadline_ms!r}")
        deadline = started + float(deadline_ms) / 1000.0
        user = request.get("user") if isinstance(request.get("user"), dict) else {}
        subject_id = str(request.get("subject_id") or user.get("id") or "")
        request_id = str(request.get("request_id") or uuid.uuid4().hex)
        model_version = request.get("model_version")
        models = (str(model_version),) if model_version else ()
        self.counters["requests"] += 1

        # breakers that gate the whole request: the surface, then the ranker's model version; every
        # permit taken is recorded with the outcome or, on any other way out, given back
        permits = self.breakers.acquire((f"surface:{surface_name}", f"model:{model_version}" if model_version else None))
        if permits.refused is not None:
            return self._serve_fallback(state, surface, request, request_id, subject_id, models, cands, permits.refused,
                                        permits.refused_state, started, deadline, evaluator)
        with permits:
            slate, outcome = self._decide(state, surface, request, request_id, subject_id, models, cands, started, deadline, evaluator)
            permits.record(outcome)
        slate.breaker_state = State.HALF_OPEN.value if permits.half_open else State.CLOSED.value
        if self.config.cache_safe_slates and outcome.kind == "drop_rate" and len(slate) and subject_id:
            # the subject's own last fully labelled slate: safe *for this subject* (never another's),
            # with each item's source and creator, so a fallback can leave out those now open
            cache = self._subject_slates
            cache[(surface_name, subject_id)] = (slate.item_ids, slate.scores, self._served_scopes(cands, slate))
            if len(cache) > self.config.cached_slates_max:
                cache.pop(next(iter(cache)))
        if self.sink is not None:
            self.sink(slate)
        return slate

    def _serve_fallback(self, state: CompiledBundle, surface: CompiledSurface, request: dict, request_id: str,
                        subject_id: str, models: tuple[str, ...], cands: Candidates, scope: str, refused_state: State,
                        started: float, deadline: float, evaluator: str) -> Slate:
        fb = self._fallback_for(scope)
        self.counters["fallbacks"] += 1
        st = refused_state.value
        strict_permits = self.breakers.acquire((f"surface:{fb.surface}",)) if fb.kind == "stricter_rules" else None
        if strict_permits is not None and strict_permits.refused is None:
            with strict_permits:  # the stricter surface's own breaker sees its label read
                strict = state.surface(fb.surface or "")
                slate, outcome = self._decide(state, strict, request, request_id, subject_id, models, cands, started, deadline, evaluator)
                strict_permits.record(outcome)
            slate.surface = surface.surface
            slate.fallback, slate.breaker_state = "stricter_rules", st
            slate.notes = (*slate.notes, f"breaker {scope} {st}: decided by the rules of {fb.surface}")
        elif fb.kind == "safe_source":
            safe = cand_mod.coerce(fb.candidates(request))  # type: ignore[misc]
            slate, _ = self._decide(state, surface, request, request_id, subject_id, models, safe, started, deadline, evaluator,
                                    use_store=False)
            # the request's own candidates are recorded as dropped by the breaker
            dropped = self._all_dropped(state, surface, request_id, subject_id, models, cands, scope, st)
            slate.fallback_ids = list(slate.item_ids)
            slate = Slate(**{**slate.__dict__, "candidate_ids": dropped.candidate_ids, "scores_before": dropped.scores_before,
                             "scores_after": dropped.scores_after, "rank_after": dropped.rank_after, "action": dropped.action,
                             "hard_rule": dropped.hard_rule, "_resolution": None,
                             "failed_closed": None,
                             "breaker_scope": dropped.breaker_scope, "_decisions": None})
            slate.fallback, slate.breaker_state = "safe_source", st
        else:
            slate = self._all_dropped(state, surface, request_id, subject_id, models, cands, scope, st)
            cached = self._subject_slates.get((surface.surface, subject_id)) or self._safe_slates.get(surface.surface)
            if fb.kind == "cached_slate" and cached is not None:
                ids, scores, scopes = cached
                blocked = self.breakers.blocked_items(scopes)
                if blocked:  # never an item of a source or creator whose breaker is open
                    gone = {i for i, _, _ in blocked}
                    keep = [i for i in range(len(ids)) if i not in gone]
                    ids, scores = [ids[i] for i in keep], scores[keep]
                    slate.notes = (*slate.notes, "left out of the fallback: " + ", ".join(sorted({f"{s} {b.value}" for _, s, b in blocked})))
                slate.item_ids, slate.scores, slate.fallback_ids = list(ids), scores.copy(), list(ids)
            elif strict_permits is not None:
                slate.notes = (*slate.notes, f"breaker surface:{fb.surface} of the stricter rules is not closed: nothing served")
            slate.fallback = fb.kind
        if self.sink is not None:
            self.sink(slate)
        return slate

    def _all_dropped(self, state: CompiledBundle, surface: CompiledSurface, request_id: str, subject_id: str,
                     models: tuple[str, ...], cands: Candidates, scope: str, st: str) -> Slate:
        n = cands.n
        return Slate(
            request_id=request_id, ts=self._clock(), surface=surface.surface, subject_id=subject_id,
            bundle_version=state.version, bundle_hash=state.hash, item_ids=[], scores=np.empty(0), item_labels={},
            breaker_state=st, model_versions=models, candidate_ids=cands.ids, scores_before=cands.scores,
            scores_after=cands.scores.copy(), rank_after=np.full(n, -1, dtype=np.int64), action=np.full(n, K_DROP, dtype=np.int8),
            hard_rule=np.full(n, BREAKER, dtype=np.int32), specs=surface.specs, breaker_scope=dict.fromkeys(range(n), scope),
            breaker_states=dict.fromkeys(range(n), st),
        )

    # -- the decision itself -------------------------------------------------------------------
    def _read_labels(self, surface: CompiledSurface, cands: Candidates, deadline: float, use_store: bool):
        """Label columns for the surface's rules: caller-supplied ``labels.X`` first, the store
        for the rest. Returns (values, present, outcome kind, duration, complete): complete when
        the store vouched that every label is present for every candidate."""
        n = cands.n
        values: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        columns = cands.columns
        wanted: Any = surface.label_names  # the usual case: the caller gives no labels
        if any(map(columns.__contains__, surface.label_columns)):
            wanted = []
            for name, key in zip(surface.label_names, surface.label_columns, strict=True):
                given = columns.get(key)
                if given is not None:
                    values[name] = given
                    present[name] = ~np.isnan(given)
                else:
                    wanted.append(name)
        kind, duration, complete = "drop_rate", 0.0, False
        if wanted:
            store_ok = False
            if use_store and self.labels is not None and n:
                t0 = time.perf_counter()
                try:
                    remaining = max(deadline - t0, 0.0)
                    got = self.labels.get(cands.ids.tolist(), wanted, timeout_s=remaining)
                    duration = time.perf_counter() - t0
                    if len(got.item_ids) != n:
                        raise ValueError(f"label store answered {len(got.item_ids)} items for {n}")
                    if getattr(got, "columns_checked", False) is True:
                        # the in-memory store's own batch: float64/bool arrays of n values, by construction
                        values.update(got.values)
                        present.update(got.present)
                    else:  # any other store's answer is converted and its shapes checked
                        for name in wanted:
                            v = np.asarray(got.values[name], dtype=np.float64)
                            p = np.asarray(got.present[name], dtype=bool)
                            if v.shape != (n,) or p.shape != (n,):
                                raise ValueError(f"label {name!r}: store returned shape {v.shape}/{p.shape} for {n} items")
                            values[name], present[name] = v, p
                    self.counters["garbage_labels"] += int(getattr(got, "garbage", 0))
                    store_ok = True
                    complete = len(wanted) == len(surface.label_names) and getattr(got, "complete", False) is True
                except Exception as e:  # down, slow, garbage: fail closed, count, never raise
                    duration = time.perf_counter() - t0
                    timed_out = bool(getattr(e, "timeout", False)) or isinstance(e, TimeoutError)
                    kind = "label_store_timeout" if timed_out else "label_store_error"
                    self.counters["label_store_timeouts" if timed_out else "label_store_errors"] += 1
            if not store_ok:
                for name in wanted:
                    values[name] = np.full(n, np.nan)
                    present[name] = np.zeros(n, dtype=bool)
        return values, present, kind, duration, complete

    def _batch(self, surface: CompiledSurface, request: dict, cands: Candidates, values, present, complete: bool = False):
        n = cands.n
        columns: dict[str, Any] = {attr: values[name] for attr, name in surface.label_attrs}
        # all present (complete): no masks to build, invert and check
        missing: dict[str, np.ndarray] = {} if complete else {attr: ~present[name] for attr, name in surface.label_attrs}
        clean: set[str] = set()
        given = cands.columns
        for attr, path, kind, elem in surface.field_attrs:
            if path == "id":
                col = cands.ids
            elif path == "score":
                col = cands.scores
            else:
                col = given.get(path)
            if col is None:
                columns[attr] = np.zeros(n)
                missing[attr] = np.ones(n, dtype=bool)
                continue
            if not isinstance(col, np.ndarray):  # an Arrow list column: the policy library reads it as is
                columns[attr] = col
                continue
            if kind == "list" and elem == "string" and col.dtype == object:
                converted = _string_lists(col)
                if converted is not None:
                    columns[attr], nulls = converted
                    if nulls is not None and nulls.any():
                        missing[attr] = nulls
                    continue
            if kind == "string" and col.dtype == object and n and _clean_str_objects(col.tolist()):
                columns[attr] = col  # JSON strings, checked: the policy library reads them as they are
                clean.add(attr)
                continue
            if col.dtype == object and kind in ("double", "int", "bool", "string") and n:
                typed = _typed(col, kind)
                if typed is not None:  # the usual case (JSON arrays of one type, no nulls): one C pass
                    columns[attr] = typed
                    continue
            if col.dtype == object and kind in ("double", "int", "bool", "string"):
                miss = np.equal(col, None)
                has_missing = bool(miss.any())
                filled = col
                if has_missing:
                    filled = col.copy()
                    filled[miss] = "" if kind == "string" else 0
                # numbers and strings as typed arrays take the evaluator's fast path; anything
                # of the wrong type stays an object column, which the policy library marks missing
                with contextlib.suppress(TypeError, ValueError, OverflowError):
                    if kind == "string":
                        if n and _all_strings(filled):
                            col = filled.astype(str)
                    elif kind == "double":
                        col = filled.astype(np.float64)
                    elif kind in ("int", "bool") and n and _inferred(filled) == ("integer" if kind == "int" else "boolean"):
                        col = filled.astype(np.int64 if kind == "int" else np.bool_)
                if has_missing:
                    missing[attr] = miss
            elif col.dtype.kind == "f":
                # the minimum is NaN exactly when a value is: one pass, no mask, in the usual case
                if len(col) and np.isnan(np.minimum.reduce(col)):
                    missing[attr] = np.isnan(col)
            elif col.dtype.kind == "U" and NATIVE and col.dtype.itemsize and col.flags.c_contiguous \
                    and _native.clean_strings(col, col.dtype.itemsize // 4):
                clean.add(attr)  # checked in one C pass: the policy library need not scan it again
            columns[attr] = col
        scalars: dict[str, Any] = {}
        for attr, parts in surface.request_paths:
            node: Any = request
            for part in parts:
                if not isinstance(node, dict) or part not in node:
                    node = None
                    break
                node = node[part]
            if node is not None:
                scalars[attr] = node
        from assay.policy import Batch

        # list(string) columns given as rows of lists are converted and checked by Arrow in the
        # policy library's own fast path
        return Batch.from_columns(n, columns=columns, missing=missing, scalars=scalars, clean=frozenset(clean))

    def _decide(self, state: CompiledBundle, surface: CompiledSurface, request: dict, request_id: str, subject_id: str,
                models: tuple[str, ...], cands: Candidates, started: float, deadline: float, evaluator: str,
                use_store: bool = True) -> tuple[Slate, CallOutcome]:
        n = cands.n
        specs = surface.specs
        values, present, kind, duration, complete = self._read_labels(surface, cands, deadline, use_store)
        budget_out = time.perf_counter() >= deadline
        notes: list[str] = []
        if kind != "drop_rate":
            notes.append(f"label store failed ({kind}); fail-closed")
        if budget_out and n:
            self.counters["budget_exhausted"] += 1
            notes.append("deadline budget exhausted; fail-closed")
            if kind == "drop_rate":
                kind = "label_store_timeout"  # the read used up the budget: a slow call
            outcomes = np.full((len(specs), n), OUT_MISSING, dtype=np.int8)
        elif n and specs:
            batch = self._batch(surface, request, cands, values, present, complete)
            if evaluator == "reference":
                outcomes = np.asarray(surface.compiled.evaluate_reference(batch), dtype=np.int8)
            else:
                outcomes = np.asarray(surface.compiled.evaluate(batch), dtype=np.int8)
        else:
            outcomes = np.zeros((len(specs), n), dtype=np.int8)

        # -- what the rules decide, as (rules x candidates) matrices --------------------------
        pre_dropped = np.zeros(n, dtype=bool)  # dropped before any rule: unlabeled, out of budget
        undecided = np.int32(-1)  # what hard_rule says where no rule decided: -1, or why dropped
        mode = self.config.surface_modes.get(surface.surface, self.config.default_mode)
        if mode == "fail_closed" and surface.label_names and n and not complete:
            labelled = np.zeros(n, dtype=bool)
            for name in surface.label_names:
                labelled |= present[name]
            pre_dropped = ~labelled
            undecided = np.where(pre_dropped, np.int32(UNLABELED), undecided)
        if budget_out and n:
            undecided = np.where(pre_dropped, undecided, np.int32(BUDGET))
            pre_dropped = np.ones(n, dtype=bool)
        live_rule = surface.vectors.live
        if surface.partial_rollout:
            live_rule = live_rule.copy()
            for r in surface.partial_rollout:
                live_rule[r] &= _in_rollout(specs[r].id, subject_id, specs[r].rollout)
        res = resolve(surface, outcomes, live_rule, pre_dropped)
        first, failed_closed, dropped = res.first, res.failed_closed, res.dropped
        action = res.action.copy()  # caps and source breakers act on top of what the rules decided
        hard_rule = np.where(first < len(specs), first, undecided).astype(np.int32, copy=False)
        labelling = res.soft[surface.label_rows] if len(surface.label_rows) else None
        capping = res.soft[surface.cap_rows] if len(surface.cap_rows) else None
        keep = ~dropped
        scores_after = cands.scores * res.factor
        # rank survivors by demoted score; ties keep the ranker's order (a stable sort)
        order = np.argsort(-scores_after, kind="stable")
        order = order[keep[order]]
        for c, r in enumerate(surface.cap_rules):
            spec = specs[r]
            m = capping[c]
            in_cap = m[order]
            if not in_cap.any():
                continue
            positions = order[in_cap]  # capped candidates, best first
            key_col = cands.columns.get(spec.key)
            if key_col is None and spec.key in ("id",):
                key_col = cands.ids
            if key_col is None:
                ordinal = np.arange(len(positions))  # no such field: one group
            elif not isinstance(key_col, np.ndarray):  # an Arrow list column: lists grouped as tuples
                ordinal = _group_ordinals(_hashable(key_col, positions))
            else:
                ordinal = _cap_ordinals(key_col, positions)
            over = positions[ordinal >= spec.limit]
            if len(over):
                keep[over] = False
                action[over] = K_CAP
                hard_rule[over] = spec.index
            order = order[keep[order]]
        rank_after = np.full(n, -1, dtype=np.int64)
        rank_after[order] = np.arange(len(order))
        served_ids = cands.ids[order].tolist()
        item_labels: dict[str, tuple[str, ...]] = {}
        if len(surface.label_rows):
            # flat positions (rule * n + candidate): np.nonzero on a 2-d matrix costs 4x as much,
            # and labelled survivors are few
            shown = np.flatnonzero(labelling & keep).tolist()
            if shown:
                ids, texts = cands.ids, surface.label_texts
                for c, k in sorted((f % n, f // n) for f in shown):  # by candidate, then rule order
                    item_id = ids[c]
                    item_labels[item_id] = (*item_labels.get(item_id, ()), texts[k])
        drop_rate = np.count_nonzero(dropped) / n if n else 0.0
        slate = Slate(
            request_id=request_id, ts=self._clock(), surface=surface.surface, subject_id=subject_id,
            bundle_version=state.version, bundle_hash=state.hash, item_ids=served_ids, scores=scores_after[order],
            item_labels=item_labels, model_versions=models, candidate_ids=cands.ids, scores_before=cands.scores,
            scores_after=scores_after, rank_after=rank_after, action=action, hard_rule=hard_rule,
            failed_closed=failed_closed, specs=specs, notes=tuple(notes), _resolution=res,
        )
        self._source_breakers(cands, dropped, slate)
        return slate, CallOutcome(kind=kind, duration_s=duration, value=drop_rate)

    def _served_scopes(self, cands: Candidates, slate: Slate) -> dict[str, list]:
        """The source and creator of each served item, in slate order (for the kinds with breakers)."""
        kinds = self.breakers.item_kinds
        if not kinds or not len(slate.item_ids):
            return {}
        order = np.flatnonzero(slate.rank_after >= 0)
        order = order[np.argsort(slate.rank_after[order], kind="stable")]
        out: dict[str, list] = {}
        for kind in kinds:
            col = cands.columns.get(kind)
            if isinstance(col, np.ndarray):
                out[kind] = col[order].tolist()
        return out

    def _source_breakers(self, cands: Candidates, dropped: np.ndarray, slate: Slate) -> None:
        """Per-source (and per-creator) breakers: an open one's candidates leave the slate; each
        value's drop rate in this batch is one call for its breaker."""
        if not self.breakers.item_kinds or not cands.n:
            return
        removed = np.zeros(cands.n, dtype=bool)
        for kind in self.breakers.item_kinds:
            column = cands.columns.get(kind)
            if not isinstance(column, np.ndarray):
                continue
            code, uniques = _factorize(column, with_uniques=True)
            totals = np.bincount(code, minlength=len(uniques))
            drops = np.bincount(code, weights=dropped.astype(np.float64), minlength=len(uniques))
            for c, value in enumerate(uniques.tolist()):
                if value is None:
                    continue
                scope = f"{kind}:{value}"
                permits = self.breakers.acquire((scope,))
                if permits.refused is not None:
                    mask = code == c
                    removed |= mask & (slate.rank_after >= 0)
                    st = permits.refused_state.value
                    for i in np.flatnonzero(mask):
                        slate.breaker_scope.setdefault(int(i), scope)
                        slate.breaker_states.setdefault(int(i), st)
                    continue
                permits.record(CallOutcome(kind="drop_rate", value=float(drops[c]) / float(totals[c])))
        if removed.any():
            slate.action[removed] = K_DROP
            slate.hard_rule[removed] = BREAKER
            keep = slate.rank_after >= 0
            keep &= ~removed
            order = np.flatnonzero(keep)
            order = order[np.argsort(slate.rank_after[order], kind="stable")]
            slate.rank_after[:] = -1
            slate.rank_after[order] = np.arange(len(order))
            slate.item_ids = slate.candidate_ids[order].tolist()
            slate.scores = slate.scores_after[order]
            slate.item_labels = {k: v for k, v in slate.item_labels.items() if k in set(slate.item_ids)}
            slate.notes = (*slate.notes, "item breakers open: " + ", ".join(sorted({slate.breaker_scope[int(i)] for i in np.flatnonzero(removed)})))
