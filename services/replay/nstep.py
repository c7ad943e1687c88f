"""n-step returns built at sample time from one stream's one-step records (pure numpy, no I/O)."""
from __future__ import annotations

import numpy as np


class NStepReturns:
    """Vectorised n-step returns over ONE actor stream's records.

    The records of one stream sit at positions 0..valid_len-1 in insertion order (a ring buffer
    hands in its contents unrolled, oldest first; arrays may be longer than valid_len, the tail is
    ignored).  Record t = (s_t, a_t, r_t = reward_game + reward_shaping, terminal_t), where
    terminal_t means "a_t ended the episode, no bootstrap after it".  A truncated record carries a
    state but no action: it only provides s_t to bootstrap earlier records.

    For a start t, h = min(n, steps up to and including the episode's terminal record, steps up
    to but excluding a truncated record); R = sum_{k<h} gamma^k r_{t+k}.

    ==========================  ======  ========  =============  =====
    case (start t)              h       discount  bootstrap_pos  ok
    ==========================  ======  ========  =============  =====
    full window, same episode   n       gamma^n   t+n            True
    terminal at t+j, j < n      j+1     0         t (unused)     True
    truncated record at t+j<=n  j       gamma^j   t+j            True
    episode's first step        (any of the three rows above)    True
    still open: t+h>=valid_len  -       0         t              False
    id changes, no end marker   -       0         t              False
    t itself truncated          -       0         t              False
    t outside [0, valid_len)    -       0         clipped t      False
    ==========================  ======  ========  =============  =====

    "Still open" = the episode has neither a terminal nor a truncated record yet, so the
    successor record t+h does not exist yet; the same start becomes ok once it arrives.  A window
    never crosses an episode boundary: positions t..t+h (the bootstrap one included) must share
    t's episode_id, and a change of id without a terminal/truncated end is a lost end (ok=False,
    forever).  Rows with ok=False return R=0, discount=0, bootstrap_pos=start clipped into range.
    n and gamma are per call, so the same stored records serve any n.
    """

    @staticmethod
    def compute(starts, n: int, gamma: float, *, episode_id, reward, terminal, truncated,
                valid_len: int):
        """Return (returns float32[B], discount float32[B], bootstrap_pos int64[B], ok bool[B]).

        starts: positions (int array, any shape, flattened); n >= 1; gamma: discount factor;
        episode_id int64[N], reward float32[N] (game + shaping summed), terminal bool[N],
        truncated bool[N] with N >= valid_len.  Inputs are not modified.
        """
        n = int(n)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        valid_len = int(valid_len)
        ep = np.asarray(episode_id)
        rew = np.asarray(reward)
        term = np.asarray(terminal, dtype=bool)
        trunc = np.asarray(truncated, dtype=bool)
        if not (len(ep) == len(rew) == len(term) == len(trunc)):
            raise ValueError("episode_id, reward, terminal, truncated must have equal lengths")
        if not 0 <= valid_len <= len(ep):
            raise ValueError(f"valid_len {valid_len} outside [0, {len(ep)}]")
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        b = starts.size
        returns = np.zeros(b, np.float64)
        discount = np.zeros(b, np.float64)
        boot = np.zeros(b, np.int64)
        ok = np.zeros(b, bool)
        if valid_len == 0 or b == 0:
            return returns.astype(np.float32), discount.astype(np.float32), boot, ok

        last = valid_len - 1
        t = np.clip(starts, 0, last)
        boot[:] = t
        ep0 = ep[t]
        ok = (starts >= 0) & (starts <= last) & ~trunc[t]
        active = ok.copy()  # still accumulating rewards
        g = 1.0  # gamma^k, shared by the whole batch
        for k in range(n + 1):
            p = t + k
            pc = np.minimum(p, last)
            if k > 0:
                # record t+k must exist and belong to t's episode (else: still open / lost end)
                missing = active & ((p > last) | (ep[pc] != ep0))
                ok &= ~missing
                active &= ~missing
                # bootstrap from t+k: a truncated record, or the window is full (k == n)
                stop = active & (trunc[pc] | (k == n))
                boot[stop] = p[stop]
                discount[stop] = g
                active &= ~stop
            if k == n:
                break
            returns[active] += g * rew[pc[active]]
            ended = active & term[pc]  # terminal: discount 0, bootstrap unused (stays t)
            active &= ~ended
            g *= gamma
        returns[~ok] = 0.0
        discount[~ok] = 0.0
        boot[~ok] = t[~ok]
        return returns.astype(np.float32), discount.astype(np.float32), boot, ok

    @staticmethod
    def over_links(starts, n: int, gamma: float, *, next_pos, episode_id, reward, terminal, truncated):
        """`compute` for records that sit anywhere (a ring shared by interleaved streams) and are
        chained by `next_pos[i]`, the position of record i's successor in its stream (-1: none
        yet, so "still open").  Same table, same arithmetic (bit-identical results); returns
        (returns float32[B], discount float32[B], bootstrap_pos int64[B], ok bool[B]) with
        bootstrap_pos a position, the start itself where there is no bootstrap.

        One step per k follows the links of the whole batch; finished rows ride along (their
        reads are masked), which is cheaper than compacting the batch every step.
        """
        n = int(n)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        b = starts.size
        ep0 = episode_id.take(starts)
        ok = ~truncated.take(starts)
        active = ok.copy()                      # still accumulating rewards
        returns = np.zeros(b, np.float64)
        discount = np.zeros(b, np.float64)
        boot = starts.copy()
        step_reward = np.empty(b, reward.dtype)
        cur = starts
        g = 1.0                                 # gamma^k, shared by the whole batch
        for k in range(n):
            # Finished rows may hold -1 (no successor) in `cur`: mode="clip" reads position 0 for
            # them, and their values are masked out.
            # Record k is in the window: add its reward (g * reward in reward's dtype, as compute).
            np.multiply(reward.take(cur, mode="clip"), g, out=step_reward)
            np.add(returns, step_reward, out=returns, where=active)
            active &= ~terminal.take(cur, mode="clip")      # terminal: discount 0, no bootstrap
            g *= gamma
            # Record k+1 must exist and belong to the start's episode (else still open / lost end).
            nxt = next_pos.take(cur, mode="clip")
            bad = (nxt < 0) | (episode_id.take(nxt, mode="clip") != ep0)
            ok &= ~(active & bad)
            active &= ~bad
            # Bootstrap from record k+1: a truncated record, or the window is full.
            stop = (active & truncated.take(nxt, mode="clip")) if k + 1 < n else active
            np.copyto(boot, nxt, where=stop)
            np.copyto(discount, g, where=stop)
            active &= ~stop
            cur = nxt
        np.copyto(returns, 0.0, where=~ok)
        return returns.astype(np.float32), discount.astype(np.float32), boot, ok
