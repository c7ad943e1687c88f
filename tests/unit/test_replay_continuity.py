"""Stream links only on (episode, step) continuity (issue 15, item 2): no n-step window crosses a
gap in a stream's steps, loops or runs backwards.  Every sampled row is checked against a brute
force built from what was inserted.  Pure mirror, no Redis (the Redis side, writes and restore,
is tests/integration/test_replay_continuity.py)."""
from __future__ import annotations

import numpy as np
import pytest

from services.replay.mirror import ReplayMirror
from tempest_common.messages import NO_ACTION, TransitionBatch

D = 6
GAMMA = 0.9


def rows(stream: int, episode: int, steps, run: int = 0, end: str | None = None, seed: int = 0) -> dict:
    """Rows of one stream's episode; each names itself in its state: [stream, run, episode, step].
    `run` tells apart rows that share (episode, step), e.g. before and after a worker restart.
    end: "terminal" or "truncated" on the last row."""
    steps = np.asarray(steps, np.int32)
    n = len(steps)
    state = np.zeros((n, D), np.float16)
    state[:, 0], state[:, 1], state[:, 2], state[:, 3] = stream, run, episode, steps
    terminal, truncated = np.zeros(n, bool), np.zeros(n, bool)
    action = np.ones(n, np.int16)
    if end == "terminal":
        terminal[-1] = True
    elif end == "truncated":
        truncated[-1], action[-1] = True, NO_ACTION
    reward = np.random.default_rng(seed + 1000 * run + steps[0]).integers(-3, 10, n).astype(np.float32)
    return dict(episode_id=np.full(n, episode, np.int64), step=steps, actor=np.zeros(n, np.uint8), action=action,
                reward_game=np.where(truncated, 0, reward).astype(np.float32),
                reward_shaping=np.where(truncated, 0, 0.5).astype(np.float32),
                terminal=terminal, truncated=truncated, state=state)


def join(*parts: dict) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def make_batch(stream_id: str, part: dict) -> TransitionBatch:
    return TransitionBatch(stream_id, "w", **part)


class Reference:
    """What was inserted, keyed by the state's [stream, run, episode, step]: the true successor
    of a row is the same (stream, run, episode) at step + 1, whatever the mirror linked."""

    def __init__(self):
        self.rows: dict[tuple, tuple[float, bool, bool]] = {}

    def add(self, part: dict) -> None:
        for i in range(len(part["step"])):
            key = tuple(int(x) for x in part["state"][i, :4])
            self.rows[key] = (float(part["reward_game"][i] + part["reward_shaping"][i]),
                              bool(part["terminal"][i]), bool(part["truncated"][i]))

    def window(self, key: tuple, n: int):
        """(R, discount, bootstrap key or None) of start `key`; None if its window is incomplete."""
        s, run, e, t = key
        r, g = 0.0, 1.0
        for k in range(n):
            rec = self.rows.get((s, run, e, t + k))
            if rec is None:
                return None
            reward, terminal, truncated = rec
            if truncated:
                return None if k == 0 else (r, g, (s, run, e, t + k))
            r += g * reward
            if terminal:
                return r, 0.0, None
            g *= GAMMA
        return (r, g, (s, run, e, t + n)) if (s, run, e, t + n) in self.rows else None

    def complete(self, n: int) -> set:
        return {k for k in self.rows if self.window(k, n) is not None}


def check_samples(mirror: ReplayMirror, ref: Reference, n: int, draws: int = 3000, seed: int = 0) -> set:
    """Sample `draws` rows; every one must match the brute force.  Returns the starts seen."""
    s = mirror.sample(draws, n, GAMMA, prioritized=False, beta=0.0, rng=np.random.default_rng(seed))
    seen = set()
    for i in range(draws):
        key = tuple(int(x) for x in s.state[i, :4])
        want = ref.window(key, n)
        assert want is not None, f"row {key} sampled with n={n}, but its window is not complete: it crossed a gap"
        r, disc, boot = want
        assert s.reward[i] == pytest.approx(r, rel=1e-5, abs=1e-5), key
        assert s.discount[i] == pytest.approx(disc, rel=1e-6), key
        if boot is not None:
            assert tuple(int(x) for x in s.next_state[i, :4]) == boot, f"row {key} bootstraps from the wrong row"
        seen.add(key)
    return seen


def store(mirror: ReplayMirror, ref: Reference, stream_id: str, part: dict) -> None:
    mirror.insert(make_batch(stream_id, part))
    ref.add(part)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_a_dropped_batch_is_not_bridged(n):
    """The issue's case: steps 64-128 never arrived; steps 60-63 bootstrapped from 129-132."""
    m, ref = ReplayMirror(1000, D), Reference()
    store(m, ref, "s", rows(0, 0, range(0, 64)))
    store(m, ref, "s", rows(0, 0, range(129, 200), end="terminal"))
    seen = check_samples(m, ref, n)
    assert not {(0, 0, 0, t) for t in range(64 - n, 64)} & seen
    assert seen == ref.complete(n), "every complete window is still drawn"
    assert m.next[63] == -1 and m.link_breaks == 1


@pytest.mark.parametrize("steps", [
    [*range(0, 10), *range(20, 30)],     # a hole inside one batch
    [*range(0, 10), *range(5, 15)],      # steps run backwards: a loop over steps 5-9
    [*range(0, 10), 9, *range(10, 20)],  # a repeated step
], ids=["hole", "backwards", "repeat"])
def test_rows_of_one_batch_link_only_where_they_continue(steps):
    m, ref = ReplayMirror(1000, D), Reference()
    part = rows(0, 0, steps, end="terminal")
    cut = int(np.flatnonzero(np.diff(part["step"]) != 1)[0]) + 1
    part["state"][cut:, 1] = 1               # the rows after the discontinuity: another "run" for the reference
    store(m, ref, "s", part)
    seen = check_samples(m, ref, 3)
    assert seen == ref.complete(3)
    assert m.next[cut - 1] == -1 and m.link_breaks == 1


def test_a_restarted_worker_that_reuses_episode_ids_is_not_linked_to_its_past():
    """A worker killed mid-episode 0 comes back and numbers its episodes from 0 again: the last row
    before the restart (episode 0, step 9) is not continued by the new episode 0's step 0."""
    m, ref = ReplayMirror(1000, D), Reference()
    store(m, ref, "s", rows(0, 0, range(0, 10), run=0))
    store(m, ref, "s", rows(0, 0, range(0, 30), run=1, end="terminal"))
    assert check_samples(m, ref, 3) == ref.complete(3)
    assert m.next[9] == -1 and m.link_breaks == 1


def test_continuous_streams_still_link_across_batches_and_episodes_count_no_breaks():
    """Two interleaved streams, episodes ending terminal or truncated, sent in batches of 7: every
    complete window is drawn (so batch boundaries are bridged) and nothing counts as a break."""
    m, ref = ReplayMirror(2000, D), Reference()
    parts = {s: join(*(rows(s, e, range(0, 5 + 7 * e), end=("terminal", "truncated")[e % 2], seed=s)
                       for e in range(6))) for s in (0, 1)}
    for i in range(0, max(len(p["step"]) for p in parts.values()), 7):
        for s, p in parts.items():
            if i < len(p["step"]):
                store(m, ref, f"s{s}", {k: v[i:i + 7] for k, v in p.items()})
    for n in (1, 3, 8):
        assert check_samples(m, ref, n, draws=20_000, seed=n) == ref.complete(n)
    assert m.link_breaks == 0


def test_break_all_streams_forgets_every_stream_end():
    m, ref = ReplayMirror(1000, D), Reference()
    for s in (0, 1):
        store(m, ref, f"s{s}", rows(s, 0, range(0, 10)))
    m.break_all_streams()
    for s in (0, 1):
        m.insert(make_batch(f"s{s}", rows(s, 0, range(10, 20), end="terminal")))
    assert m.next[9] == -1 and m.next[19] == -1


@pytest.mark.parametrize("starts", [(0, 50), (1500, 1600)], ids=["hole", "ring had wrapped"])
def test_uniform_draws_reach_every_restored_row(starts):
    """A rebuild that skipped a chunk leaves a hole, and one of a ring that had wrapped starts mid-ring:
    the rows are not in slots [0, size), where uniform draws once looked (a row beyond was never
    drawn, or no row at all)."""
    m, ref = ReplayMirror(1000, D), Reference()
    for i, seq in enumerate(starts):
        part = rows(0, i, range(0, 20), end="terminal")
        m.insert(make_batch("s", part), seq_start=seq)
        ref.add(part)
    assert check_samples(m, ref, 3) == ref.complete(3)
