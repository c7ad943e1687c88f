"""A sum tree over slot priorities for prioritized sampling, vectorised over batches (numpy).

Leaves are slots 0..capacity-1 (capacity rounded up to a power of two); each inner node holds
the sum of its children.  `sample(u)` finds a whole batch of uniform draws at once: a
searchsorted over the running sums of one level (`_START_LEVEL`) replaces the top of the
descent, then one vectorised step per remaining level.  Sorted draws are ~3x faster than
unsorted ones at 1M slots (the lower levels' gathers walk memory in order instead of missing
the cache at random), so the mirror sorts its draws first.
"""
from __future__ import annotations

import numpy as np

# The level whose running sums start the descent: 2**12 nodes (a 32 KB cumsum per sample call)
# leaves 8 steps to descend at 1M slots; measured fastest of levels 8..14 (a deeper start makes
# searchsorted's binary search cost more than the levels it saves).
_START_LEVEL = 12
# Updates touching at least 1/_DENSE of a level's nodes recompute that whole level with strided
# slices (contiguous, no gathers) instead of gathering each touched node's children.
_DENSE = 4


class SumTree:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.size = 1 << max(0, int(np.ceil(np.log2(max(1, capacity)))))
        self.depth = self.size.bit_length() - 1          # leaves are level `depth`, the root level 0
        self.tree = np.zeros(2 * self.size, np.float64)  # node i has children 2i, 2i+1; root is 1

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def get(self, slots: np.ndarray) -> np.ndarray:
        return self.tree[self.size + np.asarray(slots, np.int64)]

    def set(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        """Set leaf priorities (duplicates: the last one wins) and refresh their ancestors."""
        slots = np.asarray(slots, np.int64)
        if slots.size == 0:
            return
        first = int(slots[0])
        if slots.size > 1 and int(slots[-1]) - first == slots.size - 1 \
                and np.all(slots[1:] - slots[:-1] == 1):     # a run of slots (every insert)
            self.tree[self.size + first:self.size + first + slots.size] = priorities
            self._refresh_range(self.size + first, self.size + first + slots.size)
            return
        self.tree[self.size + slots] = priorities
        # Parents may repeat; writing a node twice writes the same sum, so no np.unique needed.
        nodes = (self.size + slots) >> 1
        level = self.depth - 1
        while level >= 0 and (1 << level) > _DENSE * nodes.size:
            self.tree[nodes] = self.tree[2 * nodes] + self.tree[2 * nodes + 1]
            nodes >>= 1
            level -= 1
        for lvl in range(level, -1, -1):                     # small levels: recompute them whole
            lo = 1 << lvl
            np.add(self.tree[2 * lo:4 * lo:2], self.tree[2 * lo + 1:4 * lo:2], out=self.tree[lo:2 * lo])

    def _refresh_range(self, lo: int, hi: int) -> None:
        """Refresh the ancestors of leaves [lo, hi): slices while the range spans several nodes,
        then scalar steps up the single remaining path."""
        tree = self.tree
        while lo > 1 and hi - lo > 1:
            lo, hi = lo >> 1, ((hi - 1) >> 1) + 1
            np.add(tree[2 * lo:2 * hi:2], tree[2 * lo + 1:2 * hi:2], out=tree[lo:hi])
        node = lo >> 1
        while node >= 1:
            tree[node] = tree[2 * node] + tree[2 * node + 1]
            node >>= 1

    def sample(self, u: np.ndarray) -> np.ndarray:
        """Slots for uniform draws u in [0, total): slot i is hit with probability p_i / total."""
        u = np.array(u, np.float64)
        if u.size == 0:
            return np.zeros(0, np.int64)
        tree = self.tree
        start = min(self.depth, _START_LEVEL)
        lo = 1 << start
        running = np.cumsum(tree[lo:2 * lo])
        node = np.searchsorted(running, u, side="right")   # first node whose running sum exceeds u
        np.minimum(node, lo - 1, out=node)                   # round-off past the last sum
        u -= np.concatenate(([0.0], running))[node]
        node += lo
        left_sum = np.empty_like(u)
        go_right = np.empty(u.shape, bool)
        for _ in range(self.depth - start):   # in place, no temporaries; (masked ufuncs are slow)
            np.left_shift(node, 1, out=node)
            np.take(tree, node, out=left_sum, mode="clip")
            np.greater_equal(u, left_sum, out=go_right)
            np.multiply(left_sum, go_right, out=left_sum)    # subtract the left sum where going right
            u -= left_sum
            node += go_right
        slots = node - self.size
        # Float round-off can walk into a zero-priority leaf at the far right; clamp to a real one.
        bad = tree[node] <= 0
        if np.any(bad):
            nz = np.flatnonzero(tree[self.size:self.size + self.capacity] > 0)
            if nz.size:
                slots[bad] = nz[np.searchsorted(nz, slots[bad]).clip(max=nz.size - 1)]
        return slots
