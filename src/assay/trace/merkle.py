"""RFC 9162 Merkle trees: hashing, proof generation and the verifiers a third party runs.

Written by hand because no maintained Python library implements RFC 9162 proofs together with
the sub-tree proofs of the transparency-dev test vectors; the algorithms follow RFC 9162 §2.1
(inclusion: 2.1.3.2, consistency: 2.1.4.2) and, for sub-trees, the recursive definition of the
proof (a valid sub-tree ``[start, end)`` has ``start`` a multiple of ``bit_ceil(end - start)``).
Every verifier is checked against every vector in ``../shared/specs/merkle-testdata/``.

Hashing: SHA-256; leaf = H(0x00 ‖ data), node = H(0x01 ‖ left ‖ right); the empty tree's root is
H(""). In the trace log a leaf's data is the 32-byte SHA-256 of the record's RFC 8785 JSON.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


class ProofError(ValueError):
    """A proof does not check out; the message says why."""


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def bit_ceil(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def root_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) from leaf hashes (reference; the log uses its stored tree instead)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = largest_power_of_two_below(n)
    return node_hash(root_from_leaves(leaves[:k]), root_from_leaves(leaves[k:]))


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} must be {HASH_SIZE} bytes, got {len(value) if value is not None else 'none'}")


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2: raise ``ProofError`` unless ``proof`` shows ``leaf`` at ``index`` in ``root``."""
    if root is None or len(root) != HASH_SIZE:
        raise ProofError("root hash must be 32 bytes")
    got = root_from_inclusion(index, size, leaf, proof)
    if got != root:
        raise ProofError(f"inclusion proof for leaf {index} of {size} computes root {got.hex()}, expected {bytes(root).hex()}")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash(leaf, "leaf hash")
    fn, sn = index, size - 1
    r = bytes(leaf)
    for position, p in enumerate(proof or ()):
        _check_hash(p, f"proof node {position}")
        if sn == 0:
            raise ProofError(f"inclusion proof is too long ({len(proof)} nodes)")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof is too short ({len(proof or ())} nodes)")
    return r


def verify_subtree_inclusion(index: int, start: int, end: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Inclusion of leaf ``index`` in the sub-tree ``[start, end)`` whose hash is ``root``."""
    _check_subtree(start, end)
    if start == end:
        raise ProofError("an empty sub-tree contains no leaf")
    if not start <= index < end:
        raise ProofError(f"leaf index {index} is outside the sub-tree [{start}, {end})")
    verify_inclusion(index - start, end - start, leaf, proof, root)


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """RFC 9162 §2.1.4.2: raise ``ProofError`` unless the tree ``(size1, root1)`` is a prefix of ``(size2, root2)``."""
    proof = list(proof or ())
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree is meaningless")
    if size2 < size1:
        raise ProofError(f"new tree size {size2} is smaller than the old size {size1}")
    if size1 == size2:
        if proof:
            raise ProofError("trees of equal size need an empty proof")
        if root1 != root2:
            raise ProofError("trees of equal size have different roots")
        return
    _check_hash(root1, "old root")
    _check_hash(root2, "new root")
    if not proof:
        raise ProofError("empty consistency proof between different sizes")
    for position, p in enumerate(proof):
        _check_hash(p, f"proof node {position}")
    if size1 & (size1 - 1) == 0:  # a power of two: the old root is itself a node of the new tree
        proof = [bytes(root1), *proof]
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof is too long ({len(proof)} nodes)")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != root1:
        raise ProofError(f"consistency proof does not reproduce the old root of size {size1}")
    if sr != root2:
        raise ProofError(f"consistency proof does not reproduce the new root of size {size2}")


def _check_subtree(start: int, end: int) -> None:
    if start < 0 or end < start:
        raise ProofError(f"[{start}, {end}) is not a range")
    if end > start and start % bit_ceil(end - start):
        raise ProofError(f"[{start}, {end}) is not a valid sub-tree (start must be a multiple of {bit_ceil(end - start)})")


def verify_subtree_consistency(start: int, end: int, size: int, proof: Sequence[bytes], subtree_root: bytes, root: bytes) -> None:
    """Check that the sub-tree ``[start, end)`` with hash ``subtree_root`` is part of the tree of
    ``size`` with hash ``root``. Mirrors the recursive proof definition: each level of the
    recursion contributes one sibling (the last proof node is the top level), and the base either
    is the sub-tree itself (known to the verifier) or a right part of it (first proof node)."""
    proof = list(proof or ())
    _check_subtree(start, end)
    if end > size:
        raise ProofError(f"sub-tree end {end} is beyond the tree size {size}")
    for position, p in enumerate(proof):
        _check_hash(p, f"proof node {position}")
    if start == end:
        if proof:
            raise ProofError("an empty sub-tree needs an empty proof")
        if subtree_root != EMPTY_ROOT:
            raise ProofError("an empty sub-tree must have the empty root")
        return
    if start == 0 and end == size:
        if proof:
            raise ProofError("a sub-tree that is the whole tree needs an empty proof")
        if subtree_root != root:
            raise ProofError("a sub-tree that is the whole tree must have the tree's root")
        return
    _check_hash(subtree_root, "sub-tree root")
    _check_hash(root, "tree root")
    # Walk down from the top, recording which sibling each level contributes.
    steps: list[str] = []  # "right": sibling on the right, outside; "left-out": left, outside; "left-in": left, inside the sub-tree
    known = True
    s, e, n = start, end, size
    while not (s == 0 and e == n):
        k = largest_power_of_two_below(n)
        if e <= k:
            steps.append("right")
            n = k
        elif k <= s:
            steps.append("left-out" if known else "left-in")
            s, e, n = s - k, e - k, n - k
        else:  # the sub-tree spans the split, so s == 0: its left part is the whole left half
            steps.append("left-in")
            known = False
            e, n = e - k, n - k
    need = len(steps) + (0 if known else 1)
    if len(proof) != need:
        raise ProofError(f"sub-tree consistency proof has {len(proof)} nodes, expected {need}")
    if known:
        sub = tree = bytes(subtree_root)
        rest = proof
    else:
        sub = tree = proof[0]
        rest = proof[1:]
    # Fold bottom-up: the deepest step pairs with the first remaining node. Left siblings that lie
    # inside the sub-tree (only below the level where it spans a split) also rebuild its hash.
    for step, p in zip(reversed(steps), rest, strict=True):
        if step == "right":
            tree = node_hash(tree, p)
        else:
            tree = node_hash(p, tree)
            if step == "left-in":
                sub = node_hash(p, sub)
    if not known and sub != subtree_root:
        raise ProofError("sub-tree consistency proof does not reproduce the sub-tree root")
    if tree != root:
        raise ProofError(f"sub-tree consistency proof does not reproduce the root of size {size}")


# ---------------------------------------------------------------- proof generation over a node store


class NodeSource:
    """Anything that returns the hash of the perfect sub-tree at ``(level, index)``."""

    def node(self, level: int, index: int) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError


def subtree_hash(nodes: NodeSource, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for an aligned range, from stored perfect nodes (O(log n) lookups)."""
    n = end - start
    if n == 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and start % n == 0:
        level = n.bit_length() - 1
        return nodes.node(level, start >> level)
    k = largest_power_of_two_below(n)
    return node_hash(subtree_hash(nodes, start, start + k), subtree_hash(nodes, start + k, end))


def root_hash(nodes: NodeSource, size: int) -> bytes:
    """The root of the first ``size`` leaves, folded from the perfect sub-trees of ``size``."""
    if size == 0:
        return EMPTY_ROOT
    perfect: list[bytes] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            perfect.append(nodes.node(level, start >> level))
            start += 1 << level
    r = perfect[-1]
    for p in reversed(perfect[:-1]):
        r = node_hash(p, r)
    return r


def inclusion_proof(nodes: NodeSource, index: int, size: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n]), leaf-first."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = largest_power_of_two_below(end - start)
        if m < k:
            path.append(subtree_hash(nodes, start + k, end))
            end = start + k
        else:
            path.append(subtree_hash(nodes, start, start + k))
            start, m = start + k, m - k
    return list(reversed(path))


def consistency_proof(nodes: NodeSource, size1: int, size2: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(m, D[n])."""
    if not 0 < size1 <= size2:
        raise ProofError(f"no consistency proof between sizes {size1} and {size2}")
    if size1 == size2:
        return []

    def subproof(m: int, start: int, end: int, known: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if known else [subtree_hash(nodes, start, end)]
        k = largest_power_of_two_below(n)
        if m <= k:
            return [*subproof(m, start, start + k, known), subtree_hash(nodes, start + k, end)]
        return [*subproof(m - k, start + k, end, False), subtree_hash(nodes, start, start + k)]

    return subproof(size1, 0, size2, True)


class ListNodes(NodeSource):
    """Perfect nodes computed in memory from a list of leaf hashes (tests, small trees)."""

    def __init__(self, leaves: Sequence[bytes]):
        self.levels: list[list[bytes]] = [list(leaves)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])

    def node(self, level: int, index: int) -> bytes:
        return self.levels[level][index]
