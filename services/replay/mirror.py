"""The in-memory mirror of the replay ring: one-step records, stream links, sampling.

Rows live in a ring of `capacity` slots; a row's global insertion sequence number `seq` fixes
its slot (slot = seq % capacity) and is the sample index the learner sends back with new
priorities (a stale index, whose slot was overwritten since, is ignored and counted; so are
indices and priorities no sample could have produced).
Streams interleave in the ring, so each row keeps a link to the next record of its stream;
n-step windows follow those links and NStepReturns does the maths.  A row is linked only to the
record that continues it (same episode, step + 1): a dropped batch, a restarted worker or a
hostile batch with a hole in its steps leaves the predecessor without a successor, so no window
bridges the gap (a gap once made steps 60-63 bootstrap from 129-132).  A successor is always
newer than its predecessor, so the ring's oldest-first overwriting never leaves a live row
pointing at a reused slot.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tempest_common.messages import NO_ACTION, TransitionBatch

from .limits import PRIORITY_CAP
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
    expert_action: np.ndarray   # the row's expert label, NO_ACTION (-1) where the expert was not asked


MAX_STREAMS = 4096   # streams whose last row is remembered for linking (workers: one stream each)
INITIAL_MAX_PRIORITY = 1.0   # the maximum priority before any update: new rows' priority in a new ring


class ReplayMirror:
    def __init__(self, capacity: int, state_dim: int, state_dtype=np.float16, alpha: float = 0.6,
                 new_priority_cap: float = 0.0):
        self.capacity = capacity
        self.state_dim = state_dim
        self.alpha = alpha
        self.new_priority_cap = new_priority_cap  # PER_NEW_PRIORITY_CAP (0 = off)
        self.state = np.zeros((capacity, state_dim), state_dtype)
        self.action = np.zeros(capacity, np.int16)
        self.expert_action = np.full(capacity, NO_ACTION, np.int16)   # DAgger labels (TransitionBatch)
        self.reward = np.zeros(capacity, np.float32)        # game + shaping, what n-step sums
        self.reward_game = np.zeros(capacity, np.float32)
        self.reward_shaping = np.zeros(capacity, np.float32)
        self.terminal = np.zeros(capacity, bool)
        self.truncated = np.zeros(capacity, bool)
        self.episode_id = np.zeros(capacity, np.int64)
        self.step = np.zeros(capacity, np.int32)
        self.actor = np.zeros(capacity, np.uint8)
        self.seq = np.full(capacity, -1, np.int64)          # -1 = empty slot
        self.fresh = np.zeros(capacity, bool)               # at the new-row priority, never trained on
        self.sampled_fresh_share = 0.0                      # of the latest sample's rows (the ratchet's symptom)
        self.next = np.full(capacity, -1, np.int64)         # slot of the stream's next record
        self.tree = SumTree(capacity)
        self.max_priority = INITIAL_MAX_PRIORITY
        self.priority_sum, self.priority_count = 0.0, 0     # every live priority update: the running mean
        self.size = 0
        self.next_seq = 0
        self._stream_last: dict[str, tuple[int, int]] = {}  # stream -> (slot, seq) of its newest row
        self.link_breaks = 0   # links refused: an open row (no terminal/truncated end) not continued
        self._low_seq = 1 << 62   # the lowest seq ever inserted: live rows' seqs lie in [it, next_seq)
        self._accept: dict[tuple[int, bool], float] = {}   # (n, prioritized) -> last share of complete windows

    def insert(self, batch: TransitionBatch, seq_start: int | None = None) -> int:
        """Store a batch (one stream, in order); returns its first seq.  `seq_start` replays a
        stored chunk with its original numbers (rebuild from Redis)."""
        b = batch.num_rows()
        if b == 0:
            return self.next_seq
        if batch.state.shape[1] != self.state_dim:
            raise ValueError(f"state size {batch.state.shape[1]} != replay's {self.state_dim}")
        start = self.next_seq if seq_start is None else seq_start
        first = start % self.capacity
        if first + b <= self.capacity:      # the usual case: one run of slots, written as slices
            slots = np.arange(first, first + b)
            rows = slice(first, first + b)
        else:                               # the run wraps around the ring's end
            slots = (start + np.arange(b, dtype=np.int64)) % self.capacity
            rows = slots
        self.size = min(self.capacity, self.size + int(np.count_nonzero(self.seq[rows] < 0)))
        self.state[rows] = batch.state
        self.action[rows] = batch.action
        self.expert_action[rows] = batch.expert_action
        self.reward_game[rows] = batch.reward_game
        self.reward_shaping[rows] = batch.reward_shaping
        self.reward[rows] = batch.reward_game + batch.reward_shaping
        self.terminal[rows] = batch.terminal
        self.truncated[rows] = batch.truncated
        self.episode_id[rows] = batch.episode_id
        self.step[rows] = batch.step
        self.actor[rows] = batch.actor
        self.seq[rows] = np.arange(start, start + b, dtype=np.int64)
        self._low_seq = min(self._low_seq, start)
        self._link(batch, slots)
        self._stream_last[batch.stream_id] = (int(slots[-1]), start + b - 1)
        if len(self._stream_last) > MAX_STREAMS:   # made-up stream ids must not grow this without bound:
            del self._stream_last[next(iter(self._stream_last))]   # the least recent stream's next batch starts anew
        # New rows get the new-row priority; bootstrap-only rows are never sample starts.
        self.tree.set(slots, np.where(batch.truncated, 0.0, self.new_priority() ** self.alpha))
        self.fresh[rows] = ~batch.truncated
        self.next_seq = max(self.next_seq, start + b)
        return start

    def priority_mean(self) -> float:
        """Mean of every priority update so far (NaN before the first)."""
        return self.priority_sum / self.priority_count if self.priority_count else float("nan")

    def new_priority(self) -> float:
        """Priority of a new row: the maximum priority seen, or with PER_NEW_PRIORITY_CAP = c > 0,
        min(maximum, c x mean of every priority update so far), so one spike does not give every
        later row a huge priority."""
        if self.new_priority_cap > 0 and self.priority_count > 0:
            return min(self.max_priority, self.new_priority_cap * self.priority_sum / self.priority_count)
        return self.max_priority

    def reset_max_priority(self) -> float:
        """Forget the priorities seen (their maximum and running mean): new rows enter at
        INITIAL_MAX_PRIORITY again, as in a new ring, instead of at a priority a divergence
        ratcheted up (the learner asks after a rollback).  Rows keep their own priorities.
        Returns the maximum forgotten."""
        forgotten = self.max_priority
        self.max_priority = INITIAL_MAX_PRIORITY
        self.priority_sum, self.priority_count = 0.0, 0
        return forgotten

    def break_stream(self, stream_id: str) -> None:
        """Forget where a stream ended: its next batch starts a new chain of links.  Used when a
        batch of the stream was dropped, so no n-step window bridges the gap."""
        self._stream_last.pop(stream_id, None)

    def break_all_streams(self) -> None:
        """break_stream for every stream: a chunk that cannot be read at restore does not say
        whose it was."""
        self._stream_last.clear()

    def sample_layout(self, batch_size: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """Dtype and shape of each Sample field for a batch (what `sample(out=...)` fills)."""
        b, st = batch_size, (self.state.dtype, (batch_size, self.state_dim))
        return {"index": (np.dtype(np.uint64), (b,)), "state": st, "action": (np.dtype(np.int16), (b,)),
                "reward": (np.dtype(np.float32), (b,)), "discount": (np.dtype(np.float32), (b,)),
                "next_state": st, "weight": (np.dtype(np.float32), (b,)), "actor": (np.dtype(np.uint8), (b,)),
                "expert_action": (np.dtype(np.int16), (b,))}

    def sample(self, batch_size: int, n: int, gamma: float, prioritized: bool, beta: float,
               rng: np.random.Generator, max_rounds: int = 8, out: dict[str, np.ndarray] | None = None) -> Sample:
        """batch_size rows whose n-step window is complete; rows that are not (an episode still
        open within n steps) are redrawn, up to max_rounds times.  `out`: arrays (as
        sample_layout, C-contiguous, possibly unaligned) to write the sample into, e.g. views
        into the reply's wire buffer."""
        if self.size == 0:
            raise LookupError("replay is empty")
        parts = []
        got = 0
        for _ in range(max_rounds):
            need = batch_size - got
            if need <= 0:
                break
            k = self._draw_count(need, (n, prioritized))
            slots = self._draw(k, prioritized, rng)
            ret, disc, boot, ok = NStepReturns.over_links(
                slots, n, gamma, next_pos=self.next, episode_id=self.episode_id, reward=self.reward,
                terminal=self.terminal, truncated=self.truncated)
            keep = np.flatnonzero(ok)
            self._accept[(n, prioritized)] = len(keep) / k
            # The draws come sorted by slot (cheaper to gather); a random subset in random order
            # keeps the batch's rows i.i.d. in every position.
            keep = keep[rng.permutation(len(keep))[:need]]
            parts.append((slots[keep], ret[keep], disc[keep], boot[keep]))
            got += len(keep)
        if got < batch_size:
            raise LookupError(f"only {got} of {batch_size} rows have a complete {n}-step window")
        chosen, ret, disc, boot = (np.concatenate(p) if len(parts) > 1 else p[0] for p in zip(*parts))
        self.sampled_fresh_share = float(np.count_nonzero(self.fresh[chosen])) / batch_size
        if out is None:
            out = {name: np.empty(shape, dt) for name, (dt, shape) in self.sample_layout(batch_size).items()}
        if prioritized:
            probs = self.tree.get(chosen) / self.tree.total
            weight = (self.size * probs) ** (-beta)
            out["weight"][:] = weight / weight.max()
        else:
            out["weight"][:] = 1.0
        out["reward"][:] = ret
        out["discount"][:] = disc
        # mode="clip": no bounds-check buffering of `out`; states move as raw bytes, so unaligned
        # targets still get numpy's plain row copies
        np.take(self.seq, chosen, out=out["index"].view(np.int64), mode="clip")   # live rows: seq >= 0
        np.take(self.action, chosen, out=out["action"], mode="clip")
        np.take(self.actor, chosen, out=out["actor"], mode="clip")
        np.take(self.expert_action, chosen, out=out["expert_action"], mode="clip")
        rows = self.state.view(np.uint8)
        np.take(rows, chosen, axis=0, out=out["state"].view(np.uint8), mode="clip")
        np.take(rows, boot, axis=0, out=out["next_state"].view(np.uint8), mode="clip")
        return Sample(**out)

    def update_priorities(self, index: np.ndarray, priority: np.ndarray, cap: float = PRIORITY_CAP) -> dict[str, int]:
        """Set priorities of sampled rows.  Rows no sample could have named, or whose priority
        would corrupt the sum tree, are ignored; returns how many rows, by reason: "stale" (the
        slot was overwritten since), "bad_index" (never a sample index: not issued yet, beyond
        int64, or a bootstrap-only row), "nonfinite", "nonpositive" (a leaf of 0 would never be
        drawn again); and "clamped": rows set to `cap` instead of their higher priority."""
        index = np.asarray(index).astype(np.uint64)   # compared unsigned: 2**64-1 must not wrap to
        priority = np.asarray(priority, np.float64)   # -1, the seq of an empty slot
        issued = index < np.uint64(self.next_seq)
        seq = np.where(issued, index, 0).astype(np.int64)
        slots = seq % self.capacity
        current = issued & (self.seq[slots] == seq)
        sampleable = current & ~self.truncated[slots]
        finite = np.isfinite(priority)
        with np.errstate(invalid="ignore"):
            positive = priority > 0
        live = sampleable & finite & positive
        p = priority[live]
        ignored = {"stale": int(np.count_nonzero(issued & ~current)),
                   "bad_index": int(np.count_nonzero(~issued | (current & ~sampleable))),
                   "nonfinite": int(np.count_nonzero(sampleable & ~finite)),
                   "nonpositive": int(np.count_nonzero(sampleable & finite & ~positive)),
                   "clamped": int(np.count_nonzero(p > cap))}
        if p.size:
            p = np.minimum(p, cap)
            self.max_priority = max(self.max_priority, float(p.max()))
            self.priority_sum += float(p.sum())
            self.priority_count += len(p)
            self.tree.set(slots[live], p ** self.alpha)
            self.fresh[slots[live]] = False
        return ignored

    def priority_snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """(seq, leaf) of every row that can start a sample: its sequence number and its sum-tree
        leaf, i.e. priority ** alpha (what survives a restart through Redis)."""
        slots = np.flatnonzero((self.seq >= 0) & ~self.truncated)
        return self.seq[slots], self.tree.get(slots).astype(np.float32)

    def restore_priorities(self, seq: np.ndarray, leaf: np.ndarray, alpha: float, max_priority: float) -> int:
        """Put back the leaves of a snapshot taken with exponent `alpha` for rows still in their
        slots; every other sample start (inserted or overwritten since the snapshot) gets the
        new-row priority, as a new row would (the restored priorities seed its running mean).
        Returns the rows restored."""
        if not (np.isfinite(alpha) and alpha > 0):
            return 0     # alpha 0: every leaf was 1, the snapshot holds no priorities
        seq = np.asarray(seq, np.int64)
        leaf = np.asarray(leaf, np.float64)
        if alpha != self.alpha:  # PER_ALPHA changed: back to priorities, then the new exponent
            with np.errstate(over="ignore", invalid="ignore"):
                leaf = leaf ** (self.alpha / alpha)
        slots = seq % self.capacity
        live = (seq >= 0) & (self.seq[slots] == seq) & ~self.truncated[slots] & np.isfinite(leaf) & (leaf >= 0)
        if np.isfinite(max_priority) and max_priority > 0:
            self.max_priority = max(self.max_priority, float(max_priority))
        if np.any(live):
            with np.errstate(over="ignore"):   # an overflow only makes the mean infinite: the maximum
                self.priority_sum += float(np.sum(leaf[live] ** (1.0 / self.alpha)))
            self.priority_count += int(np.count_nonzero(live))
        others = (self.seq >= 0) & ~self.truncated
        others[slots[live]] = False
        self.tree.set(np.flatnonzero(others), np.full(int(np.count_nonzero(others)), self.new_priority() ** self.alpha))
        self.tree.set(slots[live], leaf[live])
        self.fresh[slots[live]] = False
        return int(np.count_nonzero(live))

    # -- internals -------------------------------------------------------------------------
    def _link(self, batch: TransitionBatch, slots: np.ndarray) -> None:
        """Chain the batch's rows (in `slots`) to each other and to the stream's previous row, each
        link only where the row continues its predecessor: same episode, step + 1.  A new episode
        needs no link (a window stops at its predecessor's terminal/truncated row or at the change
        of episode id), so refusing one there costs nothing; anywhere else it is a gap, counted."""
        ep, step = batch.episode_id, batch.step
        cont = (ep[1:] == ep[:-1]) & (step[1:] == step[:-1] + 1)
        if cont.all():          # the usual case
            self.next[slots[:-1]] = slots[1:]
        else:
            self.next[slots[:-1]] = np.where(cont, slots[1:], -1)
            ended = batch.terminal[:-1] | batch.truncated[:-1]
            self.link_breaks += int(np.count_nonzero(~cont & ~ended))
        self.next[slots[-1]] = -1
        last = self._stream_last.pop(batch.stream_id, None)   # re-inserted: the dict's order is recency
        if last is not None and self.seq[last[0]] == last[1]:
            p = last[0]
            if self.episode_id[p] == ep[0] and int(self.step[p]) + 1 == int(step[0]):
                self.next[p] = slots[0]
            elif not (self.terminal[p] or self.truncated[p]):
                self.link_breaks += 1

    def _draw_count(self, need: int, key) -> int:
        """Draws for `need` complete windows: the last acceptance rate seen for this (n,
        prioritized) plus 3 standard deviations, so one round nearly always suffices without
        drawing (and building windows for) many rows that are thrown away."""
        accept = max(0.25, self._accept.get(key, 8 / 9))
        return int(need / accept + 3 * np.sqrt(need * (1 - accept)) / accept) + 16

    def _draw(self, k: int, prioritized: bool, rng: np.random.Generator) -> np.ndarray:
        """Up to k slots, sorted (uniform draws drop bootstrap-only rows)."""
        if prioritized and self.tree.total > 0:
            u = rng.random(k)
            u *= self.tree.total
            u.sort()                     # sorted draws descend the tree ~3x faster
            return self.tree.sample(u)
        if self.size == self.capacity:
            slots = rng.integers(0, self.capacity, k)
        else:   # the slots of seqs [lo, next_seq): every live row's, which is [0, size) only while no
            # seq was skipped (a restore past an unreadable chunk, or of a ring that had wrapped,
            # leaves holes); an empty slot is never a complete window: redrawn
            lo = max(self._low_seq, self.next_seq - self.capacity)
            first, span = lo % self.capacity, self.next_seq - lo
            slots = rng.integers(first, first + span, k)
            if first + span > self.capacity:   # the run wraps around the ring's end
                slots %= self.capacity
        slots.sort()
        return slots[~self.truncated[slots]]
