"""The writer's Merkle tree, stored as one append-only file of 32-byte node hashes in post-order.

Post-order (every leaf, then each perfect sub-tree's root as soon as it is complete) makes the
tree a single append-only file, so a batch is one write and one fsync, and the node at
``(level, index)`` sits at a position known in closed form:
``pos = 2(L-1) - popcount(L-1) + level`` with ``L = (index + 1) << level``.
The file is a cache derived from the segments' record hashes: the log rebuilds it if it is short
after a crash, and ``verify`` recomputes everything without trusting it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from assay.trace import hashing
from assay.trace.merkle import NodeSource

HASH = 32


def nodes_for_leaves(n: int) -> int:
    return 2 * n - n.bit_count()


def leaves_for_nodes(count: int) -> int:
    """The largest n whose complete post-order tree fits in ``count`` nodes."""
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if nodes_for_leaves(mid) <= count:
            lo = mid
        else:
            hi = mid - 1
    return lo


def node_position(level: int, index: int) -> int:
    last = ((index + 1) << level) - 1
    return 2 * last - last.bit_count() + level


class TreeFile(NodeSource):
    def __init__(self, path: Path, fsync: bool = True, threads: int | None = None, read_only: bool = False):
        self.path = path
        self.fsync = fsync
        self.threads = threads  # node levels are hashed in slices over this many threads (None: CPU count)
        # A reader's view of a writer's tree: never written or cut (the writer may be appending).
        self.read_only = read_only
        if read_only:
            self._fd = os.open(path, os.O_RDONLY) if path.exists() else os.open(os.devnull, os.O_RDONLY)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        count = os.fstat(self._fd).st_size // HASH
        self.size = leaves_for_nodes(count)
        if not read_only and nodes_for_leaves(self.size) * HASH != os.fstat(self._fd).st_size:
            self._truncate_nodes(nodes_for_leaves(self.size))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _truncate_nodes(self, count: int) -> None:
        os.ftruncate(self._fd, count * HASH)
        if self.fsync:
            os.fsync(self._fd)

    def truncate(self, n: int) -> None:
        """Forget leaves from ``n`` on (recovery after a crash mid-batch)."""
        if self.read_only:
            raise PermissionError(f"{self.path}: a reader's tree is not cut")
        if n < self.size:
            self._truncate_nodes(nodes_for_leaves(n))
            self.size = n

    def node(self, level: int, index: int) -> bytes:
        data = os.pread(self._fd, HASH, node_position(level, index) * HASH)
        if len(data) != HASH:
            raise IndexError(f"tree node ({level}, {index}) is beyond the stored tree of {self.size} leaves")
        return data

    def leaf(self, index: int) -> bytes:
        return self.node(0, index)

    def leaves(self, start: int, end: int) -> np.ndarray:
        """Leaf hashes [start, end) as an (n, 32) uint8 array."""
        idx = np.arange(start, end, dtype=np.uint64)
        positions = 2 * idx - np.bitwise_count(idx).astype(np.uint64)
        if end <= start:
            return np.empty((0, HASH), np.uint8)
        first, last = int(positions[0]), int(positions[-1])
        raw = os.pread(self._fd, (last - first + 1) * HASH, first * HASH)
        block = np.frombuffer(raw, np.uint8).reshape(-1, HASH)
        return block[(positions - first).astype(np.int64)]

    def append(self, leaves: bytes | np.ndarray | list[bytes]) -> None:
        """Add leaf hashes (concatenated, ``n * 32`` bytes) and every perfect node they complete,
        in post-order, in one write. Each level is hashed as one buffer of concatenated pairs."""
        if isinstance(leaves, list):
            leaves = b"".join(leaves)
        leaves = np.frombuffer(leaves, np.uint8) if not isinstance(leaves, np.ndarray) else leaves
        leaves = leaves.reshape(-1, HASH)
        if not len(leaves):
            return
        n0, n1 = self.size, self.size + len(leaves)
        levels: list[np.ndarray] = [leaves]
        level = 1
        while (n1 >> level) > (n0 >> level):
            jlo, jhi = n0 >> level, n1 >> level
            below = levels[-1]
            below_start = n0 >> (level - 1)
            if 2 * jlo < below_start:  # the left sibling of the first pair is already stored
                left = np.frombuffer(self.node(level - 1, 2 * jlo), np.uint8).reshape(1, HASH)
                below = np.concatenate([left, below])
            pairs = np.ascontiguousarray(below[: 2 * (jhi - jlo)])
            levels.append(np.frombuffer(hashing.node_hashes(pairs, self.threads), np.uint8).reshape(-1, HASH))
            level += 1
        base = nodes_for_leaves(n0)
        total = nodes_for_leaves(n1) - base
        # Each hash is moved as one 32-byte item (a void view): numpy copies a row of 32 uint8
        # items element by element, several times slower.
        out = np.empty(total, f"V{HASH}")
        for lvl, hashes in enumerate(levels):
            start = n0 >> lvl if lvl else n0
            idx = np.arange(start, start + len(hashes), dtype=np.int64)
            last = ((idx + 1) << lvl) - 1
            pos = 2 * last - np.bitwise_count(last) + (lvl - base)
            out[pos] = np.ascontiguousarray(hashes).view(f"V{HASH}").reshape(-1)
        os.pwrite(self._fd, out.data, base * HASH)
        if self.fsync:
            os.fsync(self._fd)
        self.size = n1
