"""Exact path-dependent TreeSHAP for a LightGBM model, fast enough for a whole candidate set.

LightGBM's own ``predict(pred_contrib=True)`` is the reference and the oracle in the tests; this
module computes *the same numbers* (to float rounding) about two orders of magnitude faster, which
is what makes per-request explanations of 1,000 candidates fit a serving budget. It is written
here because no maintained library does it for LightGBM on this stack: it is the "Fast TreeSHAP
v2" idea (Yang 2021, arXiv:2109.09847) — for path-dependent TreeSHAP, a leaf's contribution to a
row depends only on *which of the leaf's path features the row satisfies* (a bit mask over at
most ``max_depth`` features), so each leaf's contributions for every mask are tabulated once per
model, and explaining a row is a table look-up per leaf.

For a leaf with value v and unique path features F (|F| = d), with z_f the product of cover
ratios (child count / node count) of the splits on f along the path and o_f ∈ {0, 1} whether
the row satisfies all of them, the Shapley value of feature i ∈ F is

    phi_i = v (o_i - z_i) sum_{S ⊆ F \\ {i}} |S|! (d - |S| - 1)! / d! prod_{f∈S} o_f prod_{f∉S∪{i}} z_f

(the coefficient sum is a polynomial product, O(d^2) per mask). Decisions follow LightGBM's
numerical split rule, including its missing-value handling (NaN / zero as missing, default
direction). Only numerical splits are supported (the ranker has no categorical features).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.errors import BadInput

MAX_SLOTS = 12  # tables grow as 2^d per leaf; deeper paths fall back to LightGBM's pred_contrib
_MISSING = {"None": 0, "Zero": 1, "NaN": 2}


@dataclass
class TreeTables:
    n_features: int
    node_feature: np.ndarray  # int32 (n_nodes,)
    node_threshold: np.ndarray  # float64
    node_default_left: np.ndarray  # uint8
    node_missing: np.ndarray  # int8: 0 none, 1 zero, 2 nan
    leaf_path_start: np.ndarray  # int64 (n_leaves + 1,)
    path_node: np.ndarray  # int32 global node index
    path_left: np.ndarray  # uint8: the path goes left at this node
    path_slot: np.ndarray  # int32: which unique feature slot of the leaf
    leaf_slot_start: np.ndarray  # int64 (n_leaves + 1,)
    slot_feature: np.ndarray  # int32
    leaf_table_start: np.ndarray  # int64 (n_leaves,)
    table: np.ndarray  # float64
    expected_value: float


def _numba():
    from assay.errors import require_extra

    return require_extra("numba", "ml")


_KERNELS: dict[str, Any] = {}


def _kernels() -> dict[str, Any]:
    if _KERNELS:
        return _KERNELS
    numba = _numba()

    @numba.njit(cache=True)
    def build_tables(
        leaf_slot_start, slot_z, leaf_value, leaf_table_start, table
    ):  # pragma: no cover - jitted
        n_leaves = leaf_value.shape[0]
        for leaf in range(n_leaves):
            s0 = leaf_slot_start[leaf]
            d = leaf_slot_start[leaf + 1] - s0
            v = leaf_value[leaf]
            base = leaf_table_start[leaf]
            # Shapley weights w[k] = k! (d-k-1)! / d!
            w = np.empty(max(d, 1))
            for k in range(d):
                num = 1.0
                for a in range(1, k + 1):
                    num *= a
                for a in range(1, d - k):
                    num *= a
                den = 1.0
                for a in range(1, d + 1):
                    den *= a
                w[k] = num / den
            poly = np.empty(d + 1)
            for mask in range(1 << d):
                for i in range(d):
                    # coefficients of prod_{f != i} (z_f + o_f t)
                    poly[:] = 0.0
                    poly[0] = 1.0
                    deg = 0
                    for f in range(d):
                        if f == i:
                            continue
                        z = slot_z[s0 + f]
                        o = 1.0 if (mask >> f) & 1 else 0.0
                        for k in range(deg + 1, 0, -1):
                            poly[k] = poly[k] * z + poly[k - 1] * o
                        poly[0] = poly[0] * z
                        deg += 1
                    total = 0.0
                    for k in range(deg + 1):
                        total += w[k] * poly[k]
                    o_i = 1.0 if (mask >> i) & 1 else 0.0
                    table[base + mask * d + i] = v * (o_i - slot_z[s0 + i]) * total
        return table

    @numba.njit(cache=True)
    def shap_rows(
        xt,
        node_feature,
        node_threshold,
        node_default_left,
        node_missing,
        leaf_path_start,
        path_node,
        path_left,
        path_slot,
        leaf_slot_start,
        slot_feature,
        leaf_table_start,
        table,
        out,
    ):  # pragma: no cover - jitted
        # Loops are leaf-major, rows inner: each leaf's table block stays in cache while every
        # row reads it (row-major order is memory-bound on the table gathers).
        n_rows = xt.shape[1]
        n_nodes = node_feature.shape[0]
        n_leaves = leaf_table_start.shape[0]
        left = np.empty((n_nodes, n_rows), np.uint8)
        for nd in range(n_nodes):
            feat = node_feature[nd]
            mt = node_missing[nd]
            thr = node_threshold[nd]
            dl = node_default_left[nd]
            for r in range(n_rows):
                fval = xt[feat, r]
                if np.isnan(fval) and mt != 2:
                    fval = 0.0
                if (mt == 1 and abs(fval) <= 1e-35) or (mt == 2 and np.isnan(fval)):
                    left[nd, r] = dl
                else:
                    left[nd, r] = 1 if fval <= thr else 0
        fail = np.empty(n_rows, np.int64)
        for leaf in range(n_leaves):
            s0 = leaf_slot_start[leaf]
            d = leaf_slot_start[leaf + 1] - s0
            if d == 0:
                continue
            fail[:] = 0
            for p in range(leaf_path_start[leaf], leaf_path_start[leaf + 1]):
                node = path_node[p]
                want = path_left[p]
                bit = 1 << path_slot[p]
                for r in range(n_rows):
                    if left[node, r] != want:
                        fail[r] |= bit
            full = (1 << d) - 1
            t0 = leaf_table_start[leaf]
            for r in range(n_rows):
                fail[r] = t0 + (full ^ fail[r]) * d  # reuse as the row's table offset
            for s in range(d):
                dest = out[slot_feature[s0 + s]]
                for r in range(n_rows):
                    dest[r] += table[fail[r] + s]
        return out

    _KERNELS.update(build_tables=build_tables, shap_rows=shap_rows)
    return _KERNELS


def compile_model(booster: Any, max_slots: int = MAX_SLOTS) -> TreeTables:
    """Tabulate every leaf of ``booster`` (a ``lightgbm.Booster``). Raises ``BadInput`` for
    categorical splits or paths with more than ``max_slots`` distinct features."""
    dump = booster.dump_model()
    n_features = int(dump["max_feature_idx"]) + 1
    nf, nt, nd, nm = [], [], [], []
    path_start, pnode, pleft, pslot = [0], [], [], []
    slot_start, slot_feature, slot_z, leaf_value = [0], [], [], []

    for tree in dump["tree_info"]:
        root = tree["tree_structure"]
        if "leaf_value" in root:  # a single-leaf tree: a constant, no attribution
            leaf_value.append(float(root["leaf_value"]))
            path_start.append(len(pnode))
            slot_start.append(len(slot_feature))
            continue
        stack: list[tuple[dict, list[tuple[int, int, int, float]]]] = [(root, [])]
        while stack:
            node, path = stack.pop()
            if "leaf_value" in node:
                slots: dict[int, int] = {}
                zs: list[float] = []
                for gidx, went_left, feat, ratio in path:
                    if feat not in slots:
                        slots[feat] = len(slots)
                        zs.append(1.0)
                    zs[slots[feat]] *= ratio
                    pnode.append(gidx)
                    pleft.append(went_left)
                    pslot.append(slots[feat])
                if len(slots) > max_slots:
                    raise BadInput(
                        f"a leaf path uses {len(slots)} distinct features (more than {max_slots}); limit max_depth"
                    )
                slot_feature.extend(slots)  # insertion order = slot order
                slot_z.extend(zs)
                leaf_value.append(float(node["leaf_value"]))
                path_start.append(len(pnode))
                slot_start.append(len(slot_feature))
                continue
            if node.get("decision_type", "<=") != "<=":
                raise BadInput(
                    f"categorical split ({node.get('decision_type')}) is not supported by the fast TreeSHAP path"
                )
            gidx = len(nf)
            nf.append(int(node["split_feature"]))
            nt.append(float(node["threshold"]))
            nd.append(1 if node.get("default_left", True) else 0)
            nm.append(_MISSING.get(str(node.get("missing_type", "None")), 0))
            count = float(node["internal_count"])
            for child, went_left in ((node["left_child"], 1), (node["right_child"], 0)):
                c = float(child.get("internal_count", child.get("leaf_count", 0)))
                stack.append(
                    (
                        child,
                        [
                            *path,
                            (
                                gidx,
                                went_left,
                                int(node["split_feature"]),
                                c / count if count else 0.0,
                            ),
                        ],
                    )
                )

    leaf_slot_start = np.array(slot_start, np.int64)
    sizes = np.diff(leaf_slot_start)
    per_leaf = (1 << sizes) * sizes
    leaf_table_start = np.concatenate([[0], np.cumsum(per_leaf)[:-1]]).astype(np.int64)
    table = np.zeros(int(per_leaf.sum()), np.float64)
    k = _kernels()
    slot_z_arr = np.array(slot_z, np.float64)
    leaf_values = np.array(leaf_value, np.float64)
    k["build_tables"](leaf_slot_start, slot_z_arr, leaf_values, leaf_table_start, table)
    # expected value: sum over leaves of v * prod z (every feature "not known")
    expected = 0.0
    for leaf in range(leaf_values.size):
        expected += leaf_values[leaf] * float(
            np.prod(slot_z_arr[leaf_slot_start[leaf] : leaf_slot_start[leaf + 1]])
        )
    return TreeTables(
        n_features, np.array(nf, np.int32), np.array(nt, np.float64), np.array(nd, np.uint8), np.array(nm, np.int8),
        np.array(path_start, np.int64), np.array(pnode, np.int32), np.array(pleft, np.uint8), np.array(pslot, np.int32),
        leaf_slot_start, np.array(slot_feature, np.int32), leaf_table_start, table, expected,
    )  # fmt: skip


def contributions(tables: TreeTables, x: np.ndarray) -> np.ndarray:
    """(n, n_features + 1) like LightGBM's ``pred_contrib``: SHAP values, then the expected value."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != tables.n_features:
        raise BadInput(
            f"expected a matrix with {tables.n_features} feature columns; got shape {x.shape}"
        )
    xt = np.ascontiguousarray(x.T, dtype=np.float64)
    out_t = np.zeros(
        (tables.n_features + 1, x.shape[0]), np.float64
    )  # feature-major: contiguous adds
    k = _kernels()
    k["shap_rows"](
        xt,
        tables.node_feature,
        tables.node_threshold,
        tables.node_default_left,
        tables.node_missing,
        tables.leaf_path_start,
        tables.path_node,
        tables.path_left,
        tables.path_slot,
        tables.leaf_slot_start,
        tables.slot_feature,
        tables.leaf_table_start,
        tables.table,
        out_t,
    )
    out_t[-1] = tables.expected_value
    return np.ascontiguousarray(out_t.T)
