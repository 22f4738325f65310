"""The vectorised evaluator: a surface's rules compiled once into numpy column operations over a
whole candidate batch.

It compiles from the CEL library's *checked* AST (resolved names, chosen overloads, types), so
both evaluators share one meaning of every operator. Every value carries an error mask that
follows CEL's error semantics: strict functions propagate errors, ``&&``/``||`` absorb an error
when the other side decides the result (``false && error == false``), the ternary takes the
error of the branch it picks. A missing attribute is an error for the candidates that lack it.
Anything outside the supported subset is rejected at load time with the place it occurs, unless
the rule says ``evaluator: reference``.

The rules in a narrower subset (comparisons, ``&&``/``||``/``!``, ``in``, startsWith/endsWith/
contains) are also compiled into postfix programs that the C extension (``_native.c``) runs over
the whole batch in one call: the same meaning, without a Python call per operator. The numpy
closures serve every rule or batch column the C evaluator does not take, and are what the tests
and the differential fuzzer compare the C programs with (``evaluate(native=False)``).
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# the C inner loop for the rules it covers (see _native.c; required)
from assay.policy import _native
from assay.policy.batch import (
    Batch,
    ListColumn,
    ListValues,
    MapColumn,
    ScalarColumn,
    clean_str_objects,
    is_arrow_list,
    unusable_strings,
)
from assay.policy.checked_ast import CheckedAst, Node, decode_checked
from assay.policy.model import Outcome, Rule
from assay.policy.types import AttrType

INT64_MIN = np.int64(-(2**63))
_TRUE = np.bool_(True)
_MISSING = int(Outcome.MISSING)  # a plain int: IntEnum member access costs microseconds per rule


class Unsupported(Exception):
    """A construct the vectorised compiler does not handle; carries the expression offset."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


@dataclass(slots=True)
class V:
    """A vectorised value: data (array or numpy scalar) and an error mask (None = no errors)."""

    data: Any
    err: np.ndarray | None
    factor: Any = None  # a _LazyFactor (codes, uniques) for string columns
    nul: bool = False  # a string constant holding NUL: compared as Python objects


@dataclass(slots=True)
class ListV:
    col: ListColumn | None
    consts: list[Any] | None  # a list literal of constants
    err: np.ndarray | None


@dataclass(slots=True)
class MapV:
    col: MapColumn
    err: np.ndarray | None


def _objects(data: Any) -> Any:
    """As Python objects, so string comparisons are exact (numpy's fixed-width strings would
    drop a trailing NUL)."""
    if isinstance(data, np.ndarray):
        return data.astype(object)
    out = np.empty((), dtype=object)
    out[()] = data
    return out


def _holds_nul(data: Any) -> bool:
    """A string value (or any of a column's) contains NUL. Fixed-width columns cannot (the batch
    refuses interior NULs, and trailing ones are padding)."""
    if isinstance(data, str):
        return "\x00" in data
    if isinstance(data, np.ndarray) and data.dtype == object:
        return any("\x00" in v for v in data.tolist() if isinstance(v, str))
    return False


def _or(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    return a | b


Compiled = Callable[[Batch], Any]
_KEY_IDS: dict[Any, int] = {}  # structural sub-expression key -> small int, shared by all compiled rules
_KEY_COUNTER = itertools.count()  # next() is atomic: two threads compiling never share an int

_COMPARE = {
    "less": np.less, "less_equals": np.less_equal, "greater": np.greater, "greater_equals": np.greater_equal,
}
_SCALAR_TYPES = {"int", "double", "string", "bool"}


class Compiler:
    """Compiles one checked CEL expression into a function ``batch -> V``."""

    def __init__(self, ast: CheckedAst, decls: dict[str, AttrType], shared: set[Any] | None = None):
        self.ast = ast
        self.decls = decls
        self.shared = shared  # sub-expression keys worth a memo (used more than once); None: all

    def keys(self, node: Node) -> list[Any]:
        """The structural key of every memoised node under ``node`` (itself included)."""
        out = [] if node.kind in ("const", "list") else [self.key(node)]
        for child in ([node.target] if node.target is not None else []) + list(node.args):
            out += self.keys(child)
        return out

    def fail(self, node: Node, message: str) -> Unsupported:
        return Unsupported(message, self.ast.positions.get(node.id, 0))

    def type_of(self, node: Node) -> str:
        return self.ast.types.get(node.id, "unknown")

    def overload(self, node: Node) -> str:
        _, overloads = self.ast.references.get(node.id, ("", ()))
        if len(overloads) != 1:
            raise self.fail(node, f"ambiguous overload for {node.value!r} (needs a dynamic dispatch the vectorised evaluator does not do)")
        return overloads[0]

    def key(self, node: Node) -> Any:
        """A structural key, so identical sub-expressions across rules are computed once per batch."""
        if node.kind == "const":
            return ("c", node.const_type, node.value)
        if node.kind == "ident":
            return ("i", node.value)
        if node.kind == "list":
            return ("l", *(self.key(a) for a in node.args))
        ref = self.ast.references.get(node.id, ("", ()))
        return ("f", node.value, ref[1], self.key(node.target) if node.target else None, *(self.key(a) for a in node.args))

    def compile(self, node: Node) -> Compiled:
        fn = self._compile(node)
        if node.kind in ("const", "list"):
            return fn
        structural = self.key(node)
        if self.shared is not None and structural not in self.shared:
            return fn  # computed once per batch anyway: a memo would only cost its lookups
        # a small int per distinct sub-expression: the per-batch memo then hashes an int, not a
        # nested tuple (tuples do not cache their hash) on every lookup
        key = _KEY_IDS.setdefault(structural, next(_KEY_COUNTER))

        def memo(batch: Batch, fn=fn, key=key):
            hit = batch.memo.get(key)
            if hit is None:
                hit = fn(batch)
                batch.memo[key] = hit
            return hit

        return memo

    def _compile(self, node: Node) -> Compiled:
        if node.kind == "const":
            return self._const(node)
        if node.kind == "ident":
            return self._ident(node)
        if node.kind == "list":
            return self._list_literal(node)
        if node.kind == "call":
            return self._call(node)
        if node.kind == "select":
            raise self.fail(node, f"field selection .{node.value} on a non-declared value")
        if node.kind == "comprehension":
            raise self.fail(node, "macros such as exists(), all(), map() and filter() are not vectorised")
        raise self.fail(node, f"{node.kind} expressions are not vectorised")

    # -- leaves ------------------------------------------------------------------------------
    def _const(self, node: Node) -> Compiled:
        ctype = node.const_type
        if ctype == "int":
            value: Any = np.int64(node.value)
        elif ctype == "double":
            value = np.float64(node.value)
        elif ctype == "bool":
            value = np.bool_(node.value)
        elif ctype == "string":
            value = node.value
            if "\x00" in value:
                # fixed-width numpy strings drop trailing NULs; compare such constants as objects
                v = V(value, None, nul=True)
                return lambda batch: v
        else:
            raise self.fail(node, f"{ctype} literals are not vectorised")
        v = V(value, None)
        return lambda batch: v

    def _ident(self, node: Node) -> Compiled:
        name = node.value
        t = self.decls.get(name)
        if t is None:
            raise self.fail(node, f"{name!r} is not a declared attribute (comprehension variables are not vectorised)")
        ckey = Batch.column_key(name, t)  # the batch's cache key, formatted once here
        if t.kind == "map":
            return lambda batch: (lambda c: MapV(c, c.missing))(batch.column(name, t, ckey))
        if t.kind == "list":

            def list_ident(batch: Batch) -> ListV:
                if batch.is_shared(name):  # one list for the whole batch, e.g. a request's blocklist
                    ok, value = batch.shared(name, t)
                    return ListV(None, value if ok else [], None if ok else _TRUE)
                col: ListColumn = batch.column(name, t, ckey)
                return ListV(col, None, col.missing)

            return list_ident
        fill = {"int": np.int64(0), "double": np.float64(0.0), "bool": np.bool_(False), "string": ""}[t.kind]
        cast = {"int": np.int64, "double": np.float64, "bool": np.bool_, "string": str}[t.kind]

        def scalar_ident(batch: Batch) -> V:
            if batch.is_shared(name):  # request context: a scalar that broadcasts, not n copies
                ok, value = batch.shared(name, t)
                return V(cast(value) if ok else fill, None if ok else _TRUE)
            col: ScalarColumn = batch.column(name, t, ckey)
            v = V(col.data, col.missing)
            if t.kind == "string":
                v.factor = _LazyFactor(col)  # type: ignore[assignment]
            return v

        return scalar_ident

    def _list_literal(self, node: Node) -> Compiled:
        consts = []
        for el in node.args:
            if el.kind != "const" or el.const_type not in _SCALAR_TYPES:
                raise self.fail(el, "list literals must hold constants to be vectorised")
            consts.append(el.value)
        lv = ListV(None, consts, None)
        return lambda batch: lv

    # -- calls -------------------------------------------------------------------------------
    def _call(self, node: Node) -> Compiled:
        fn = node.value
        if fn in ("_&&_", "_||_"):
            return self._logical(node, fn == "_&&_")
        if fn == "!_":
            a = self.compile(node.args[0])

            def not_(batch):
                x = a(batch)
                return V(~np.asarray(x.data, dtype=bool), x.err)

            return not_
        if fn == "_?_:_":
            return self._conditional(node)
        ov = self.overload(node)
        args = ([node.target] if node.target is not None else []) + list(node.args)
        for prefix, op in _COMPARE.items():
            if ov.startswith(prefix + "_") and ov[len(prefix) + 1 :] in ("int64", "double", "string", "bool"):
                return self._binary(args, lambda a, b, op=op: op(a, b))
        if ov in ("equals", "not_equals"):
            for a in args:
                if self.type_of(a) not in _SCALAR_TYPES:
                    raise self.fail(a, f"== and != are vectorised for int, double, string and bool, not {self.type_of(a)}")
            if self.type_of(args[0]) != self.type_of(args[1]):
                raise self.fail(node, "comparing values of different types is not vectorised")
            eq = ov == "equals"
            return self._binary(args, (lambda a, b: np.equal(a, b)) if eq else (lambda a, b: np.not_equal(a, b)))
        if ov in ("add_int64", "subtract_int64"):
            return self._int_arith(args, ov == "add_int64")
        if ov == "negate_int64":
            a = self.compile(args[0])

            def neg_int(batch):
                x = a(batch)
                overflow = np.asarray(x.data == INT64_MIN)
                with np.errstate(over="ignore"):
                    data = -np.asarray(x.data)
                return V(data, _or(x.err, overflow if overflow.any() else None))

            return neg_int
        if ov == "negate_double":
            a = self.compile(args[0])
            return lambda batch: (lambda x: V(-np.asarray(x.data), x.err))(a(batch))
        if ov in ("add_double", "subtract_double", "multiply_double", "divide_double"):
            op = {"add_double": np.add, "subtract_double": np.subtract, "multiply_double": np.multiply, "divide_double": np.divide}[ov]

            def arith(a, b, op=op):
                with np.errstate(all="ignore"):
                    return op(a, b)

            return self._binary(args, arith)
        if ov == "add_string":
            a, b = self.compile(args[0]), self.compile(args[1])

            def add_string(batch):
                x, y = a(batch), b(batch)
                data = np.add(_objects(x.data), _objects(y.data))  # Python str: exact, NULs kept
                # the sum holds a NUL exactly when a part does: only then must later operations
                # keep it as Python objects (a fixed-width copy would drop a trailing NUL)
                return V(data, _or(x.err, y.err), nul=x.nul or y.nul or _holds_nul(x.data) or _holds_nul(y.data))

            return add_string
        if ov in ("in_list", "in_map"):
            return self._in(node, args, ov)
        if ov == "index_map":
            return self._index_map(node, args)
        if ov in ("size_string", "string_size"):
            return self._string_fn(args[0], None, lambda s, _: len(s), np.int64)
        if ov in ("size_list", "list_size"):
            a = self.compile(args[0])

            def size_list(batch):
                lv = a(batch)
                if lv.col is None:
                    return V(np.int64(len(lv.consts)), lv.err)
                return V(lv.col.lengths, lv.err)

            return size_list
        if ov in ("size_map", "map_size"):
            a = self.compile(args[0])
            return lambda batch: (lambda m: V(m.col.sizes(), m.err))(a(batch))
        if ov in ("starts_with_string", "ends_with_string", "contains_string"):
            method = {"starts_with_string": str.startswith, "ends_with_string": str.endswith, "contains_string": str.__contains__}[ov]
            return self._string_fn(args[0], args[1], method, np.bool_)
        raise self.fail(node, f"{fn.strip('_') or fn} ({ov}) is not vectorised; set `evaluator: reference` on the rule to serve it one candidate at a time")

    def _logical(self, node: Node, is_and: bool) -> Compiled:
        a, b = self.compile(node.args[0]), self.compile(node.args[1])

        def logical(batch):
            x = a(batch)
            if x.err is None and not np.ndim(x.data):
                # one value for the whole batch (request context): it either decides the result,
                # absorbing any error of the other side as CEL does, or the result is the other side
                if bool(x.data) != is_and:
                    return V(np.bool_(not is_and), None)
                y = b(batch)
                return V(np.asarray(y.data, dtype=bool), y.err)
            y = b(batch)
            xd, yd = np.asarray(x.data, dtype=bool), np.asarray(y.data, dtype=bool)
            data = (xd & yd) if is_and else (xd | yd)
            if x.err is None and y.err is None:
                return V(data, None)
            # the side that decides the result absorbs the other side's error
            xdec = (~xd if is_and else xd) if x.err is None else ((~xd if is_and else xd) & ~x.err)
            ydec = (~yd if is_and else yd) if y.err is None else ((~yd if is_and else yd) & ~y.err)
            err = _or(x.err, y.err) & ~(xdec | ydec)
            return V(data, err)

        return logical

    def _conditional(self, node: Node) -> Compiled:
        if self.type_of(node) not in _SCALAR_TYPES:
            raise self.fail(node, "a conditional must produce a scalar to be vectorised")
        c, x, y = (self.compile(a) for a in node.args)

        def cond(batch):
            cv = c(batch)
            if not np.ndim(cv.data):
                # one condition for the whole batch: the result is the branch it picks, as that
                # branch's own value (np.where would make a 0-d array of two scalars, and a
                # fixed-width copy of a string that ends in NUL), with the condition's error
                v = x(batch) if bool(cv.data) else y(batch)
                return V(v.data, _or(cv.err, v.err), nul=v.nul)
            xv, yv = x(batch), y(batch)
            pick = np.asarray(cv.data, dtype=bool)
            nul = xv.nul or yv.nul
            data = np.where(pick, _objects(xv.data), _objects(yv.data)) if nul else np.where(pick, xv.data, yv.data)
            branch_err = None
            if xv.err is not None or yv.err is not None:
                xe = xv.err if xv.err is not None else False
                ye = yv.err if yv.err is not None else False
                branch_err = np.asarray(np.where(pick, xe, ye), dtype=bool)
            return V(data, _or(cv.err, branch_err), nul=nul)

        return cond

    def _binary(self, args: list[Node], op) -> Compiled:
        a, b = self.compile(args[0]), self.compile(args[1])
        strings = self.type_of(args[0]) == "string"

        def binary(batch):
            x, y = a(batch), b(batch)
            xd, yd = x.data, y.data
            if strings and (x.nul or y.nul):
                xd, yd = _objects(xd), _objects(yd)
            return V(op(xd, yd), _or(x.err, y.err))

        return binary

    def _int_arith(self, args: list[Node], add: bool) -> Compiled:
        a, b = self.compile(args[0]), self.compile(args[1])

        def int_arith(batch):
            x, y = a(batch), b(batch)
            xd, yd = np.asarray(x.data, dtype=np.int64), np.asarray(y.data, dtype=np.int64)
            with np.errstate(over="ignore"):
                r = xd + yd if add else xd - yd
            overflow = ((xd ^ r) & (yd ^ r)) < 0 if add else ((xd ^ yd) & (xd ^ r)) < 0
            overflow = np.asarray(overflow)
            return V(r, _or(_or(x.err, y.err), overflow if overflow.any() else None))

        return int_arith

    def _in(self, node: Node, args: list[Node], ov: str) -> Compiled:
        elem, container = self.compile(args[0]), self.compile(args[1])
        if ov == "in_map":
            if args[0].kind != "const":
                raise self.fail(args[0], "`key in map` is vectorised for a constant key")
            key = args[0].value

            def in_map(batch):
                m = container(batch)
                _, present = m.col.key(key)
                return V(present, m.err)

            return in_map
        if self.type_of(args[0]) not in _SCALAR_TYPES:
            raise self.fail(args[0], "`in` is vectorised for scalar elements")

        def in_list(batch):
            e, lv = elem(batch), container(batch)
            if lv.col is None:  # x in [constants]
                consts = lv.consts
                if e.factor is not None and np.ndim(e.data) and len(consts) > 8:
                    codes, uniques = e.factor.get()
                    wanted = set(consts)
                    hit_u = np.fromiter((u in wanted for u in uniques), bool, len(uniques))
                    return V(hit_u[codes], _or(e.err, lv.err))
                hit = np.zeros(np.shape(e.data), bool)
                exact = any(isinstance(c, str) and "\x00" in c for c in consts) or e.nul
                data = _objects(e.data) if exact else e.data
                for c in consts:
                    hit = hit | np.equal(data, _objects(c) if exact else c)
                return V(hit, _or(e.err, lv.err))
            col = lv.col
            n = batch.n
            if col.flat.size == 0:
                return V(np.zeros(n, bool), _or(e.err, lv.err))
            target = e.data[col.row] if np.ndim(e.data) else e.data
            flat = col.flat
            if e.nul or (flat.dtype == object) != (np.asarray(target).dtype == object):
                # a str scalar goes in as itself: np.asarray would drop a trailing NUL
                flat, target = _objects(flat), _objects(target if isinstance(target, str) else np.asarray(target))
            eq = np.asarray(np.equal(flat, target), dtype=bool)
            hit = np.zeros(n, bool)
            hit[col.row[eq]] = True
            return V(hit, _or(e.err, lv.err))

        return in_list

    def _index_map(self, node: Node, args: list[Node]) -> Compiled:
        if args[1].kind != "const" or args[1].const_type != "string":
            raise self.fail(args[1], "map[key] is vectorised for a constant string key")
        m, key = self.compile(args[0]), args[1].value

        def index_map(batch):
            mv = m(batch)
            values, present = mv.col.key(key)
            return V(values, _or(mv.err, ~present))

        return index_map

    def _string_fn(self, recv: Node, arg: Node | None, fn, dtype) -> Compiled:
        r = self.compile(recv)
        if arg is not None and arg.kind != "const":
            a = self.compile(arg)

            def pairwise(batch):
                x, y = r(batch), a(batch)
                xs = np.broadcast_to(np.asarray(x.data, dtype=object), (batch.n,))
                ys = np.broadcast_to(np.asarray(y.data, dtype=object), (batch.n,))
                out = np.fromiter((fn(s, t) for s, t in zip(xs, ys, strict=True)), dtype, batch.n)
                return V(out, _or(x.err, y.err))

            return pairwise
        const = arg.value if arg is not None else None
        kernel = {str.startswith: np.strings.startswith, str.endswith: np.strings.endswith}.get(fn)

        def on_uniques(batch):
            x = r(batch)
            if kernel is not None and isinstance(x.data, np.ndarray) and x.data.dtype.kind == "U" and "\x00" not in const:
                return V(kernel(x.data, const), x.err)
            if x.factor is not None and np.ndim(x.data):
                codes, uniques = x.factor.get()
                per_u = np.fromiter((fn(u, const) for u in uniques), dtype, len(uniques))
                return V(per_u[codes] if len(uniques) else np.zeros(batch.n, dtype), x.err)
            if not np.ndim(x.data):
                return V(dtype(fn(x.data, const)), x.err)
            return V(np.fromiter((fn(s, const) for s in x.data), dtype, len(x.data)), x.err)

        return on_uniques


class _LazyFactor:
    def __init__(self, col: ScalarColumn):
        self.col = col

    def get(self) -> tuple[np.ndarray, np.ndarray]:
        return self.col.factorize()


def compile_condition(condition: bytes | CheckedAst, decls: dict[str, AttrType], shared: set[Any] | None = None) -> Compiled:
    """Compile one checked condition (serialised, or already decoded) into ``batch -> (data,
    err)``: each a bool array of n, or one numpy bool for the whole batch (assignment into an (n,)
    row broadcasts it). ``shared``: the sub-expressions to memoise per batch (those that occur
    more than once in the rule set); None memoises every one."""
    ast = decode_checked(condition) if isinstance(condition, bytes) else condition
    fn = Compiler(ast, decls, shared).compile(ast.root)

    def run(batch: Batch) -> tuple[Any, Any]:
        v = fn(batch)
        return v.data, v.err

    return run


# -- the C evaluator's programs ------------------------------------------------------------------
# value types, slot kinds and instructions as _native.c numbers them
_T = {"bool": 1, "int": 2, "double": 3, "string": 4}
_T_LIST = 5
_S_STROBJ, _S_LIST, _S_SHARED, _S_UTF8 = 5, 6, 7, 8
(_OP_SLOT, _OP_CONST, _OP_CMP, _OP_AND, _OP_OR, _OP_NOT, _OP_IN, _OP_STARTS, _OP_ENDS, _OP_CONTAINS,
 _OP_SKIP_AND, _OP_SKIP_OR) = range(1, 13)
_CMP_CODE = {"less": 0, "less_equals": 1, "greater": 2, "greater_equals": 3}
_STRING_TESTS = {"starts_with_string": _OP_STARTS, "ends_with_string": _OP_ENDS, "contains_string": _OP_CONTAINS}


@dataclass(frozen=True, slots=True)
class NativeProgram:
    """One rule as a postfix program for the C evaluator: int32 (op, arg) words, its constants
    as ``(type, elem, value)``, and the slots (attributes) it reads."""

    row: int
    code: bytes
    consts: tuple[Any, ...]
    slots: frozenset[int]


class NativeCompiler:
    """Compiles a checked condition into a :class:`NativeProgram` for the C evaluator, or raises
    :class:`Unsupported` for what the C subset does not cover (that rule stays on numpy): scalar
    comparisons of one type, ``&&``/``||``/``!``, ``in`` a list literal or list attribute, and
    startsWith/endsWith/contains. Attributes get slot numbers from ``slots``, shared by a surface's
    rules so each is read from the batch once."""

    def __init__(self, ast: CheckedAst, decls: dict[str, AttrType], slots: dict[str, int]):
        self.ast, self.decls, self.slots = ast, decls, slots
        self.words: list[int] = []
        self.consts: list[tuple[int, int, Any]] = []
        self.used: set[int] = set()

    def program(self, row: int) -> NativeProgram:
        if self.emit(self.ast.root) != "bool":
            raise Unsupported("a rule must be a bool", 0)
        return NativeProgram(row, np.asarray(self.words, dtype=np.int32).tobytes(), tuple(self.consts), frozenset(self.used))

    def _op(self, op: int, arg: int = 0) -> int:
        self.words += (op, arg)
        return len(self.words) - 1  # where the arg is, for jumps patched later

    def _const(self, ctype: str, value: Any, elem: str | None = None) -> None:
        self.consts.append((_T_LIST if elem else _T[ctype], _T[elem] if elem else 0, value))
        self._op(_OP_CONST, len(self.consts) - 1)

    def emit(self, node: Node) -> str:
        """Emit the code for ``node``; returns its type (int, double, string, bool, list(T))."""
        if node.kind == "const" and node.const_type in _T:
            self._const(node.const_type, node.value)
            return node.const_type
        if node.kind == "ident":
            t = self.decls.get(node.value)
            if t is None or (t.kind not in _T and not (t.kind == "list" and t.elem in _T)):
                raise Unsupported(f"{node.value} is not a scalar or list attribute", 0)
            slot = self.slots.setdefault(node.value, len(self.slots))
            self.used.add(slot)
            self._op(_OP_SLOT, slot)
            return t.signature
        if node.kind != "call":
            raise Unsupported(f"{node.kind} is not in the C subset", 0)
        fn, args = node.value, ([node.target] if node.target is not None else []) + list(node.args)
        if fn in ("_&&_", "_||_"):
            self._bool(args[0])
            at = self._op(_OP_SKIP_AND if fn == "_&&_" else _OP_SKIP_OR)
            self._bool(args[1])
            self._op(_OP_AND if fn == "_&&_" else _OP_OR)
            self.words[at] = len(self.words)  # skipping leaves the left side as the result
            return "bool"
        if fn == "!_":
            self._bool(args[0])
            self._op(_OP_NOT)
            return "bool"
        _, overloads = self.ast.references.get(node.id, ("", ()))
        ov = overloads[0] if len(overloads) == 1 else ""
        prefix, _, suffix = ov.rpartition("_")
        if (prefix in _CMP_CODE and suffix in ("int64", "double", "string", "bool")) or ov in ("equals", "not_equals"):
            a, b = self.emit(args[0]), self.emit(args[1])
            if a != b or a not in _T or (prefix in _CMP_CODE and a != suffix.replace("int64", "int")):
                raise Unsupported("a comparison of two types", 0)
            self._op(_OP_CMP, _CMP_CODE.get(prefix, 4 if ov == "equals" else 5))
            return "bool"
        if ov == "in_list":
            elem = self.emit(args[0])
            if elem not in _T:
                raise Unsupported("`in` needs a scalar element", 0)
            container = args[1]
            if container.kind == "list":
                if any(c.kind != "const" or c.const_type != elem for c in container.args):
                    raise Unsupported("a list literal of another type", 0)
                self._const("", tuple(c.value for c in container.args), elem=elem)
            elif self.emit(container) != f"list({elem})":
                raise Unsupported("`in` a list of another type", 0)
            self._op(_OP_IN)
            return "bool"
        if ov in _STRING_TESTS:
            if self.emit(args[0]) != "string" or self.emit(args[1]) != "string":
                raise Unsupported("string functions need strings", 0)
            self._op(_STRING_TESTS[ov])
            return "bool"
        raise Unsupported(f"{fn} ({ov}) is not in the C subset", 0)

    def _bool(self, node: Node) -> None:
        if self.emit(node) != "bool":
            raise Unsupported("&&, || and ! need bools", 0)


def _native_slot(batch: Batch, name: str, t: AttrType, ckey: str) -> tuple | None:
    """One attribute's value for the batch as the C evaluator reads it (see _native.c
    parse_slot); None when its representation is not one the C evaluator reads."""
    if batch.is_shared(name):
        ok, value = batch.shared(name, t)
        if t.kind == "list":
            return (_S_SHARED, _T_LIST, _T[t.elem], ok, value)
        return (_S_SHARED, _T[t.kind], 0, ok, value)
    col = batch.column(name, t, ckey)
    if t.kind == "list":
        kind = _data_kind(col.flat, t.elem)
        if kind is None:
            return None
        flat = col.flat.tolist() if kind == _S_STROBJ else np.ascontiguousarray(col.flat)
        return (_S_LIST, kind, flat, _mask(col.missing, batch.n), _width(col.flat), np.ascontiguousarray(col.offsets, dtype=np.int64))
    kind = _data_kind(col.data, t.kind)
    if kind is None:
        return None
    data = col.data.tolist() if kind == _S_STROBJ else np.ascontiguousarray(col.data)
    return (kind, data, _mask(col.missing, batch.n), _width(col.data))


def _list_slot(col: ListValues, elem: str, mask: np.ndarray | None, n: int) -> tuple | None:
    """A list column in its input form (flat values and offsets, as Arrow lays it out) as the C
    evaluator reads it, or None when its values need the batch's checks first. A missing row's
    elements may stay: the row is an error whatever they are."""
    flat, offsets = col.flat, col.offsets
    if type(flat) is not np.ndarray or type(offsets) is not np.ndarray or offsets.dtype != np.int64 or offsets.shape != (n + 1,) \
            or not offsets.flags.c_contiguous or (n and offsets[0] != 0):
        return None
    if elem == "string":
        if not col.clean:  # a fixed-width array could hold a NUL or a lone surrogate
            return None
        kind = _T["string"] if flat.dtype.kind == "U" and flat.dtype.itemsize else (_S_STROBJ if flat.dtype == object else None)
    else:
        kind = _T[elem] if flat.dtype == _DATA_DTYPE[elem] else None
    if kind is None or len(flat) != offsets[-1]:
        return None
    data = flat.tolist() if kind == _S_STROBJ else np.ascontiguousarray(flat)
    return (_S_LIST, kind, data, mask, _width(flat), offsets)


def _arrow_list_slot(arr: Any, mask: np.ndarray | None, n: int) -> tuple | None:
    """An Arrow list of strings as the C evaluator reads it in place: row offsets, value offsets
    and the UTF-8 bytes (no Python string per value). None when it is not one, or a value holds a
    NUL (such a row is ill-typed: the per-row path decides). Arrow strings are valid UTF-8, so
    they hold no lone surrogate."""
    import pyarrow as pa

    if len(arr) != n:
        return None
    values = arr.values
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)) or values.null_count:
        return None
    list_size = 4 if pa.types.is_list(arr.type) else 8 if pa.types.is_large_list(arr.type) else 0
    value_size = 4 if pa.types.is_string(values.type) else 8
    buffers, value_buffers = arr.buffers(), values.buffers()
    if not list_size or buffers[1] is None or value_buffers[1] is None:
        return None
    offsets = np.frombuffer(buffers[1], dtype=f"<i{list_size}", count=n + 1, offset=arr.offset * list_size).astype(np.int64)
    start, end = int(offsets[0]), int(offsets[-1])
    voff = np.frombuffer(value_buffers[1], dtype=f"<i{value_size}", count=end - start + 1,
                         offset=(values.offset + start) * value_size).astype(np.int64)
    data = value_buffers[2] if value_buffers[2] is not None else b""
    if voff[-1] > voff[0] and bytes(memoryview(data)[voff[0]: voff[-1]]).find(b"\x00") >= 0:
        return None
    return (_S_LIST, _S_UTF8, (voff, data), mask, 0, offsets - start if start else offsets)


_BOOL = np.dtype(bool)
_DATA_DTYPE = {"bool": _BOOL, "int": np.dtype(np.int64), "double": np.dtype(np.float64)}


def _data_kind(data: np.ndarray, kind: str) -> int | None:
    if kind == "string":
        if data.dtype.kind == "U" and data.dtype.itemsize:
            return _T["string"]
        if data.dtype == object:
            return _S_STROBJ
        return None
    return _T[kind] if data.dtype == _DATA_DTYPE[kind] else None


def _width(data: np.ndarray) -> int:
    return data.dtype.itemsize // 4 if data.dtype.kind == "U" else 0


def _mask(missing: np.ndarray | None, n: int) -> np.ndarray | None:
    if missing is None:
        return None
    mask = np.ascontiguousarray(missing, dtype=bool)
    return mask if mask.shape == (n,) else np.broadcast_to(mask, (n,)).copy()


class CompiledRules:
    """The rules of one surface, in order, compiled for whole batches."""

    def __init__(self, bundle, surface: str):
        self.bundle = bundle
        self.surface = surface
        self.rules: list[Rule] = bundle.rules_for(surface)
        decls = bundle.attributes["rules"]
        # the attributes the surface's rules read, as the CEL checker resolved them
        self.reads: tuple[str, ...] = tuple(sorted({a for r in self.rules for a in bundle.compiled("rules", r.id).attributes}))
        self._fns: list[Callable[[Batch], tuple[np.ndarray, np.ndarray | None]] | None] = []
        asts = [decode_checked(bundle.compiled("rules", rule.id).program.serialize()) for rule in self.rules]
        # sub-expressions that occur more than once across the rules are memoised per batch
        counts: Counter[Any] = Counter()
        for ast in asts:
            counts.update(Compiler(ast, decls).keys(ast.root))
        shared = {k for k, c in counts.items() if c > 1}
        # the rules the C subset covers also get a program for the C evaluator (same meaning:
        # the numpy closure stays, for a batch whose columns the C evaluator cannot read)
        slots: dict[str, int] = {}
        programs: list[NativeProgram] = []
        for i, (rule, ast) in enumerate(zip(self.rules, asts, strict=True)):
            try:
                self._fns.append(compile_condition(ast, decls, shared))
            except Unsupported as e:
                if rule.evaluator == "reference":
                    self._fns.append(None)  # served by the reference evaluator, as the rule asks
                    continue
                line, col = _line_col(rule.when, e.offset)
                raise bundle._builder.when_error(
                    rule, line, col, f"the vectorised evaluator cannot compile this: {e}",
                    hint="rewrite the condition, or set `evaluator: reference` on the rule to evaluate it per candidate",
                ) from None
            with contextlib.suppress(Unsupported):  # a rule outside the C subset stays on numpy
                native = NativeCompiler(ast, decls, dict(slots))  # slots are kept only if it compiles
                programs.append(native.program(i))
                slots.update(native.slots)
        self.programs = tuple(programs)
        # per slot: name, type, the batch's cache key, and for scalar kinds the C kind and dtype
        # of a column that passes as it is
        self._slot_plan = [(name, decls[name], Batch.column_key(name, decls[name]), _T.get(decls[name].kind, 0),
                            _DATA_DTYPE.get(decls[name].kind)) for name in sorted(slots, key=slots.get)]
        self._native_rows = frozenset(p.row for p in programs)
        self._native_args = tuple((p.row, p.code, p.consts) for p in programs)

    def evaluate(self, batch: Batch, *, native: bool = True) -> np.ndarray:
        """Outcomes, shape (len(rules), n), int8: Outcome.FALSE / TRUE / MISSING. The rules the C
        subset covers run in C, the rest on their numpy closures; ``native=False`` runs every rule
        on its closure (the closures serve the rules C does not take, and are what the tests and
        the differential fuzzer compare the C programs with)."""
        out = np.empty((len(self.rules), batch.n), dtype=np.int8)
        done = self._evaluate_native(batch, out) if native and batch.n else frozenset()
        for i, fn in enumerate(self._fns):
            if i in done:
                continue
            if fn is None:
                out[i] = self._reference_row(i, batch)
                continue
            data, err = fn(batch)
            row = out[i]
            row[:] = data
            if err is not None:
                if np.ndim(err):
                    np.putmask(row, err, _MISSING)
                elif err:
                    row[:] = _MISSING
        return out

    def _native_slots(self, batch: Batch) -> list[tuple | None]:
        """Every attribute the programs read, as the C evaluator takes it. A typed numpy column
        with a bool mask (what the guard hands over) passes as it is, without the batch building
        a typed column object first; anything else takes :func:`_native_slot`."""
        columns, masks, n = batch.columns, batch.missing_masks, batch.n
        slots: list[tuple | None] = []
        for name, t, ckey, kind, dtype in self._slot_plan:
            col = columns.get(name)
            if col is not None and name not in batch.scalars:
                if t.kind == "list" and t.elem == "string" and type(col) is np.ndarray and col.dtype == object \
                        and batch.flatten_string_lists(name):
                    col = columns[name]  # rows of JSON lists, flattened in one C pass (nulls now missing)
                mask = masks.get(name)
                if mask is None or (type(mask) is np.ndarray and mask.dtype == _BOOL and mask.shape == (n,) and mask.flags.c_contiguous):
                    # dtype is None for strings, and numpy reads `dtype == None` as float64: test it first
                    if type(col) is np.ndarray and kind and col.ndim == 1 and col.flags.c_contiguous:
                        if dtype is not None and col.dtype == dtype:
                            slots.append((kind, col, mask, 0))
                            continue
                        if kind == _T["string"] and col.dtype.kind == "U" and col.dtype.itemsize and (
                                name in batch.clean or unusable_strings(col) is None):
                            # fixed-width strings checked clean (one C pass): read in place
                            slots.append((kind, col, mask, col.dtype.itemsize // 4))
                            continue
                        if kind == _T["string"] and col.dtype == object:
                            values = col.tolist()
                            if name in batch.clean or clean_str_objects(values):  # str objects (JSON strings), checked
                                slots.append((_S_STROBJ, values, mask, 0))
                                continue
                    if type(col) is ListValues and t.kind == "list" and (slot := _list_slot(col, t.elem, mask, n)):
                        slots.append(slot)
                        continue
                    if t.elem == "string" and is_arrow_list(col) and (slot := _arrow_list_slot(col, mask, n)):
                        slots.append(slot)
                        continue
            slots.append(_native_slot(batch, name, t, ckey))
        return slots

    def _evaluate_native(self, batch: Batch, out: np.ndarray) -> frozenset[int]:
        """Run the C programs into ``out``; returns the rows they wrote."""
        if not self.programs:
            return frozenset()
        slots = self._native_slots(batch)
        args, rows = self._native_args, self._native_rows
        if None in slots:  # a column in a form C does not read: its rules stay on numpy
            unreadable = {k for k, s in enumerate(slots) if s is None}
            kept = [p for p in self.programs if not (p.slots & unreadable)]
            args, rows = tuple((p.row, p.code, p.consts) for p in kept), frozenset(p.row for p in kept)
            slots = [s if s is not None else (_S_SHARED, 1, 0, False, None) for s in slots]
        _native.evaluate(args, tuple(slots), batch.n, out)
        return rows

    def evaluate_reference(self, batch: Batch) -> np.ndarray:
        """The same outcomes from the CEL library, one candidate at a time (the oracle)."""
        out = np.empty((len(self.rules), batch.n), dtype=np.int8)
        for i in range(len(self.rules)):
            out[i] = self._reference_row(i, batch)
        return out

    def _reference_row(self, i: int, batch: Batch) -> np.ndarray:
        from assay.policy.reference import evaluate_one

        cc = self.bundle.compiled("rules", self.rules[i].id)
        decls = self.bundle.attributes["rules"]
        return np.fromiter(
            (evaluate_one(cc, decls, lambda name, t, j=j: batch.row_value(name, t, j)) for j in range(batch.n)),
            np.int8,
            batch.n,
        )


def _line_col(text: str, offset: int) -> tuple[int, int]:
    # CEL places a call at its "(": point at the function name instead
    if text[offset : offset + 1] == "(":
        while offset > 0 and (text[offset - 1].isalnum() or text[offset - 1] == "_"):
            offset -= 1
    before = text[:offset]
    line = before.count("\n") + 1
    col = offset - (before.rfind("\n") + 1) + 1
    return line, col
