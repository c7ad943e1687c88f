"""A sum tree over slot priorities for prioritized sampling, vectorised over batches (numpy).

Leaves are slots 0..capacity-1 (capacity rounded up to a power of two); each inner node holds
the sum of its children.  `sample(u)` descends the tree for a whole batch of uniform draws at
once, one level per step, so a batch of 16384 costs ~log2(capacity) numpy operations.
"""
from __future__ import annotations

import numpy as np


class SumTree:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.size = 1 << max(0, int(np.ceil(np.log2(max(1, capacity)))))
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
        nodes = self.size + slots
        self.tree[nodes] = priorities
        nodes = np.unique(nodes >> 1)  # sorted once; a sorted array stays sorted under >> 1
        while True:
            self.tree[nodes] = self.tree[2 * nodes] + self.tree[2 * nodes + 1]
            if nodes[0] == 1:
                break
            nodes = nodes >> 1
            nodes = nodes[np.concatenate(([True], nodes[1:] != nodes[:-1]))]

    def sample(self, u: np.ndarray) -> np.ndarray:
        """Slots for uniform draws u in [0, total): slot i is hit with probability p_i / total."""
        u = np.array(u, np.float64)
        node = np.ones(u.shape, np.int64)
        while node[0] < self.size if node.size else False:
            left = 2 * node
            left_sum = self.tree[left]
            go_right = u >= left_sum
            u = np.where(go_right, u - left_sum, u)
            node = np.where(go_right, left + 1, left)
        slots = node - self.size
        # Float round-off can walk into a zero-priority leaf at the far right; clamp to a real one.
        bad = self.tree[node] <= 0
        if np.any(bad):
            nz = np.flatnonzero(self.tree[self.size:self.size + self.capacity] > 0)
            if nz.size:
                slots[bad] = nz[np.searchsorted(nz, slots[bad]).clip(max=nz.size - 1)]
        return slots
