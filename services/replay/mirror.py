"""The in-memory mirror of the replay ring: one-step records, stream links, sampling.

Rows live in a ring of `capacity` slots; a row's global insertion sequence number `seq` fixes
its slot (slot = seq % capacity) and is the sample index the learner sends back with new
priorities (a stale index, whose slot was overwritten since, is ignored and counted).
Streams interleave in the ring, so each row keeps a link to the next record of its stream;
n-step windows follow those links and NStepReturns does the maths.  A successor is always newer
than its predecessor, so the ring's oldest-first overwriting never leaves a live row pointing
at a reused slot.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tempest_common.messages import TransitionBatch

from .nstep import NStepReturns
from .sumtree import SumTree


@dataclass
class Sample:
    index: np.ndarray       # uint64 seq of each sampled row
    state: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    discount: np.ndarray
    next_state: np.ndarray
    weight: np.ndarray
    actor: np.ndarray


class ReplayMirror:
    def __init__(self, capacity: int, state_dim: int, state_dtype=np.float16, alpha: float = 0.6):
        self.capacity = capacity
        self.state_dim = state_dim
        self.alpha = alpha
        self.state = np.zeros((capacity, state_dim), state_dtype)
        self.action = np.zeros(capacity, np.int16)
        self.reward = np.zeros(capacity, np.float32)        # game + shaping, what n-step sums
        self.reward_game = np.zeros(capacity, np.float32)
        self.reward_shaping = np.zeros(capacity, np.float32)
        self.terminal = np.zeros(capacity, bool)
        self.truncated = np.zeros(capacity, bool)
        self.episode_id = np.zeros(capacity, np.int64)
        self.step = np.zeros(capacity, np.int32)
        self.actor = np.zeros(capacity, np.uint8)
        self.seq = np.full(capacity, -1, np.int64)          # -1 = empty slot
        self.next = np.full(capacity, -1, np.int64)         # slot of the stream's next record
        self.tree = SumTree(capacity)
        self.max_priority = 1.0
        self.size = 0
        self.next_seq = 0
        self._stream_last: dict[str, tuple[int, int]] = {}  # stream -> (slot, seq) of its newest row

    def insert(self, batch: TransitionBatch, seq_start: int | None = None) -> int:
        """Store a batch (one stream, in order); returns its first seq.  `seq_start` replays a
        stored chunk with its original numbers (rebuild from Redis)."""
        b = batch.num_rows()
        if b == 0:
            return self.next_seq
        if batch.state.shape[1] != self.state_dim:
            raise ValueError(f"state size {batch.state.shape[1]} != replay's {self.state_dim}")
        start = self.next_seq if seq_start is None else seq_start
        seqs = start + np.arange(b, dtype=np.int64)
        slots = seqs % self.capacity
        self.size = min(self.capacity, self.size + int(np.count_nonzero(self.seq[slots] < 0)))
        self.state[slots] = batch.state
        self.action[slots] = batch.action
        self.reward_game[slots] = batch.reward_game
        self.reward_shaping[slots] = batch.reward_shaping
        self.reward[slots] = batch.reward_game + batch.reward_shaping
        self.terminal[slots] = batch.terminal
        self.truncated[slots] = batch.truncated
        self.episode_id[slots] = batch.episode_id
        self.step[slots] = batch.step
        self.actor[slots] = batch.actor
        self.seq[slots] = seqs
        self.next[slots] = -1
        self.next[slots[:-1]] = slots[1:]
        last = self._stream_last.get(batch.stream_id)
        if last is not None and self.seq[last[0]] == last[1]:
            self.next[last[0]] = slots[0]
        self._stream_last[batch.stream_id] = (int(slots[-1]), int(seqs[-1]))
        # New rows get the maximum priority; bootstrap-only rows are never sample starts.
        self.tree.set(slots, np.where(batch.truncated, 0.0, self.max_priority ** self.alpha))
        self.next_seq = max(self.next_seq, start + b)
        return start

    def break_stream(self, stream_id: str) -> None:
        """Forget where a stream ended: its next batch starts a new chain of links.  Used when a
        batch of the stream was dropped, so no n-step window bridges the gap."""
        self._stream_last.pop(stream_id, None)

    def sample(self, batch_size: int, n: int, gamma: float, prioritized: bool, beta: float,
               rng: np.random.Generator, max_rounds: int = 8) -> Sample:
        """batch_size rows whose n-step window is complete; rows that are not (an episode still
        open within n steps) are redrawn, up to max_rounds times."""
        if self.size == 0:
            raise LookupError("replay is empty")
        chosen = np.empty(0, np.int64)
        parts = []
        for _ in range(max_rounds):
            need = batch_size - len(chosen)
            if need <= 0:
                break
            slots = self._draw(need + need // 8 + 8, prioritized, rng)
            ret, disc, boot, ok = self._nstep(slots, n, gamma)
            keep = np.flatnonzero(ok)[:need]
            chosen = np.concatenate([chosen, slots[keep]])
            parts.append((ret[keep], disc[keep], boot[keep]))
        if len(chosen) < batch_size:
            raise LookupError(f"only {len(chosen)} of {batch_size} rows have a complete {n}-step window")
        ret = np.concatenate([p[0] for p in parts])
        disc = np.concatenate([p[1] for p in parts])
        boot = np.concatenate([p[2] for p in parts])
        if prioritized:
            probs = self.tree.get(chosen) / self.tree.total
            weight = (self.size * probs) ** (-beta)
            weight = (weight / weight.max()).astype(np.float32)
        else:
            weight = np.ones(batch_size, np.float32)
        return Sample(self.seq[chosen].astype(np.uint64), self.state[chosen], self.action[chosen], ret, disc,
                      self.state[boot], weight, self.actor[chosen])

    def update_priorities(self, index: np.ndarray, priority: np.ndarray) -> int:
        """Set priorities of sampled rows; returns how many were stale (slot reused) or invalid."""
        index = np.asarray(index, np.int64)
        priority = np.asarray(priority, np.float64)
        slots = index % self.capacity
        live = (self.seq[slots] == index) & np.isfinite(priority) & (priority >= 0) & ~self.truncated[slots]
        if np.any(live):
            p = priority[live]
            self.max_priority = max(self.max_priority, float(p.max()))
            self.tree.set(slots[live], p ** self.alpha)
        return int(np.count_nonzero(~live))

    # -- internals -------------------------------------------------------------------------
    def _draw(self, k: int, prioritized: bool, rng: np.random.Generator) -> np.ndarray:
        if prioritized and self.tree.total > 0:
            return self.tree.sample(rng.random(k) * self.tree.total)
        slots = rng.integers(0, self.size, k) if self.size < self.capacity else rng.integers(0, self.capacity, k)
        return slots[~self.truncated[slots]]

    def _nstep(self, slots: np.ndarray, n: int, gamma: float):
        """Follow stream links n steps from each slot and compute returns on the windows."""
        windows = np.empty((len(slots), n + 1), np.int64)
        windows[:, 0] = slots
        for k in range(1, n + 1):
            prev = windows[:, k - 1]
            windows[:, k] = np.where(prev >= 0, self.next[np.maximum(prev, 0)], -1)
        flat = windows.reshape(-1)
        missing = flat < 0
        take = np.maximum(flat, 0)
        episode = np.where(missing, -1, self.episode_id[take])  # -1 never matches a real episode
        ret, disc, boot, ok = NStepReturns.compute(
            np.arange(len(slots)) * (n + 1), n, gamma, episode_id=episode, reward=self.reward[take],
            terminal=self.terminal[take] & ~missing, truncated=self.truncated[take] & ~missing,
            valid_len=len(flat))
        return ret, disc, flat[boot], ok
