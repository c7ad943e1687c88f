"""NStepReturns: a table of named cases, per-stream use, and a property test against a brute force."""
from collections import namedtuple

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from services.replay.nstep import NStepReturns

Rec = namedtuple("Rec", "episode_id reward terminal truncated")


def recs(*rows):
    """rows: (episode_id, reward, kind) with kind '' (normal), 'T' (terminal), 'X' (truncated)."""
    return [Rec(e, float(np.float32(r)), k == "T", k == "X") for e, r, k in rows]


def arrays(records, pad=0):
    """Column arrays of a stream; `pad` extra garbage rows past valid_len (a ring's unused tail)."""
    ep = np.array([r.episode_id for r in records] + [999] * pad, np.int64)
    rew = np.array([r.reward for r in records] + [1e6] * pad, np.float32)
    term = np.array([r.terminal for r in records] + [False] * pad, bool)
    trunc = np.array([r.truncated for r in records] + [False] * pad, bool)
    return dict(episode_id=ep, reward=rew, terminal=term, truncated=trunc)


def compute(records, starts, n, gamma, valid_len=None, pad=0):
    valid_len = len(records) if valid_len is None else valid_len
    return NStepReturns.compute(np.asarray(starts), n, gamma, valid_len=valid_len,
                                **arrays(records, pad))


def brute_force_nstep(records, t, n, gamma):
    """Step-by-step reference: (R, discount, bootstrap_pos, ok) for start t of `records`."""
    not_ok = (0.0, 0.0, t, False)
    if not 0 <= t < len(records) or records[t].truncated:
        return not_ok
    segment = []  # t's episode from t on, up to and including its end marker if present
    for rec in records[t:]:
        if rec.episode_id != records[t].episode_id:
            break
        segment.append(rec)
        if rec.terminal or rec.truncated:
            break
    ret, h = 0.0, 0
    while h < n and h < len(segment) and not segment[h].truncated:
        ret += gamma ** h * segment[h].reward
        h += 1
        if segment[h - 1].terminal:
            return ret, 0.0, t, True
    if h < len(segment):  # record t+h exists in the episode: bootstrap from it
        return ret, gamma ** h, t + h, True
    return not_ok  # episode still open (or its end was lost): no successor yet


G = 0.5
OPEN5 = recs((1, 1, ""), (1, 2, ""), (1, 4, ""), (1, 8, ""), (1, 16, ""), (1, 32, ""))
LONG = recs(*[(7, 2 ** i, "") for i in range(7)], (7, 128, "T"))
NOT_OK = (0.0, 0.0, None, False)

# id, records, valid_len (None = all), n, gamma, starts, expected per start (R, discount, boot, ok)
CASES = [
    ("one_step_terminal", recs((1, 2, "T"), (2, 5, "")), None, 3, G, [0], [(2, 0, 0, True)]),
    ("episode_shorter_than_n", recs((1, 1, ""), (1, 2, ""), (1, 4, "T"), (2, 100, ""), (2, 100, "")),
     None, 5, G, [0, 1, 2], [(1 + 1 + 1, 0, 0, True), (2 + 2, 0, 1, True), (4, 0, 2, True)]),
    ("truncated_within_n", recs((1, 1, ""), (1, 2, ""), (1, 0, "X"), (2, 100, "")),
     None, 5, G, [0, 1, 2], [(1 + 1, G ** 2, 2, True), (2, G, 2, True), NOT_OK]),
    ("truncated_exactly_at_n", recs((1, 1, ""), (1, 2, ""), (1, 0, "X")),
     None, 2, G, [0], [(1 + 1, G ** 2, 2, True)]),
    ("full_window_mid_episode", LONG, None, 3, G, [2], [(4 + 4 + 4, G ** 3, 5, True)]),
    ("terminal_exactly_last_of_window", LONG, None, 3, G, [5], [(32 + 32 + 32, 0, 5, True)]),
    ("start_at_episode_first_step", recs((1, 50, ""), (1, 50, "T"), (2, 1, ""), (2, 2, ""), (2, 4, "")),
     None, 2, G, [2], [(1 + 1, G ** 2, 4, True)]),
    ("open_episode_at_end", OPEN5, 5, 2, G, [0, 1, 2, 3, 4],
     [(1 + 1, G ** 2, 2, True), (2 + 2, G ** 2, 3, True), (4 + 4, G ** 2, 4, True), NOT_OK, NOT_OK]),
    ("open_episode_successor_arrives", OPEN5, 6, 2, G, [3, 4, 5],
     [(8 + 8, G ** 2, 5, True), NOT_OK, NOT_OK]),
    ("episode_id_changes_without_end", recs((1, 1, ""), (1, 2, ""), (2, 4, ""), (2, 8, ""), (2, 16, "")),
     None, 2, G, [0, 1, 2], [NOT_OK, NOT_OK, (4 + 4, G ** 2, 4, True)]),
    ("n3_request", LONG, None, 3, G, [0, 4], [(1 + 1 + 1, G ** 3, 3, True), (16 + 16 + 16, G ** 3, 7, True)]),
    ("n5_request_same_data", LONG, None, 5, G, [0, 4],
     [(5.0, G ** 5, 5, True), (16 + 16 + 16 + 16, 0, 4, True)]),
    ("truncated_start", recs((1, 1, ""), (1, 0, "X")), None, 1, G, [1, 0], [NOT_OK, (1, G, 1, True)]),
    ("gamma_one", recs((1, 1, ""), (1, 2, ""), (1, 3, "T")), None, 2, 1.0, [0, 1],
     [(3, 1, 2, True), (5, 0, 1, True)]),
    ("starts_out_of_range", OPEN5, 4, 1, G, [-1, 4, 9], [NOT_OK, NOT_OK, NOT_OK]),
]


@pytest.mark.parametrize("records,valid_len,n,gamma,starts,expected",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("pad", [0, 3], ids=["exact", "ring_tail"])
def test_cases(records, valid_len, n, gamma, starts, expected, pad):
    before = arrays(records, pad)
    ret, disc, boot, ok = compute(records, starts, n, gamma, valid_len, pad)
    assert ret.dtype == np.float32 and disc.dtype == np.float32
    assert boot.dtype == np.int64 and ok.dtype == bool
    for i, (r, d, b, o) in enumerate(expected):
        assert ok[i] == o, f"start {starts[i]}"
        if o:
            assert ret[i] == pytest.approx(r, rel=1e-6) and disc[i] == pytest.approx(d)
            assert boot[i] == b
        else:
            assert ret[i] == 0 and disc[i] == 0
        ref = brute_force_nstep(records[:valid_len], starts[i], n, gamma)
        assert ref[3] == o and (not o or (ref[0] == pytest.approx(r) and ref[1:3] == pytest.approx((d, b))))
    after = arrays(records, pad)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # inputs untouched


def test_two_interleaved_streams_are_computed_per_stream():
    """Two actors' records arrive interleaved; each stream is stored and computed separately."""
    a = recs((10, 1, ""), (10, 2, ""), (10, 4, "T"), (11, 8, ""))
    b = recs((20, 100, ""), (20, 200, "X"), (21, 300, ""), (21, 400, ""))
    n = 2
    ra = compute(a, [0, 1, 2, 3], n, G)
    rb = compute(b, [0, 1, 2, 3], n, G)
    assert list(ra[3]) == [True, True, True, False] and list(rb[3]) == [True, False, False, False]
    np.testing.assert_allclose(ra[0][:3], [1 + 1, 2 + 2, 4])
    np.testing.assert_allclose(rb[0][0], 100)
    assert rb[1][0] == pytest.approx(G) and rb[2][0] == 1  # bootstraps from the truncated record
    # Mixing them into one array (arrival order) would put foreign ids inside every window:
    mixed = [x for pair in zip(a, b) for x in pair]
    assert not compute(mixed, [0, 1, 2, 3], n, G)[3].any()


def test_argument_errors():
    records = recs((1, 1, ""), (1, 1, "T"))
    with pytest.raises(ValueError):
        compute(records, [0], 0, G)
    with pytest.raises(ValueError):
        compute(records, [0], 1, G, valid_len=3)
    ret, disc, boot, ok = compute(records, [], 3, G)
    assert ret.shape == disc.shape == boot.shape == ok.shape == (0,)
    assert not compute(records, [0, 1], 1, G, valid_len=0)[3].any()


@st.composite
def streams(draw):
    """Random episodes (1..15 action records; terminal, truncated or left open), concatenated."""
    records, next_id = [], draw(st.integers(0, 5))
    for _ in range(draw(st.integers(1, 6))):
        length = draw(st.integers(1, 15))
        end = draw(st.sampled_from(["terminal", "truncated", "open"]))
        rewards = draw(st.lists(st.floats(-10, 10, width=32), min_size=length, max_size=length))
        for i, r in enumerate(rewards):
            records.append(Rec(next_id, float(r), end == "terminal" and i == length - 1, False))
        if end == "truncated":
            records.append(Rec(next_id, float(draw(st.floats(-10, 10, width=32))), False, True))
        next_id += draw(st.integers(1, 3))
    valid_len = draw(st.integers(0, len(records)))  # later records "not arrived yet"
    return records, valid_len


@settings(max_examples=300, deadline=None)
@given(streams(), st.integers(1, 8), st.floats(0, 1), st.integers(0, 4))
def test_matches_brute_force(stream, n, gamma, pad):
    records, valid_len = stream
    starts = np.arange(valid_len)
    ret, disc, boot, ok = NStepReturns.compute(starts, n, gamma, valid_len=valid_len,
                                               **arrays(records, pad))
    arrived = records[:valid_len]
    for t in starts:
        r_ref, d_ref, b_ref, ok_ref = brute_force_nstep(arrived, int(t), n, gamma)
        assert ok[t] == ok_ref, t
        assert boot[t] == b_ref, t
        np.testing.assert_allclose(ret[t], r_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(disc[t], d_ref, rtol=1e-5, atol=1e-30)
