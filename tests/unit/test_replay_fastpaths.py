"""The replay's fast paths against their plain definitions: InPlace bytes == wire.encode,
NStepReturns.over_links == NStepReturns.compute, SumTree == brute-force sums and draws."""
import numpy as np
import pytest

from services.replay.inplace import InPlace
from services.replay.nstep import NStepReturns
from services.replay.sumtree import SumTree
from tempest_common.messages import PriorityUpdate, SampleReply
from tempest_common.wire import MessageError, encode


@pytest.mark.parametrize("b,d,state_dtype", [(0, 8, np.float16), (3, 8, np.float16), (300, 5, np.float32),
                                             (16384, 200, np.float16)])
def test_inplace_bytes_equal_encode(b, d, state_dtype):
    rng = np.random.default_rng(b)
    arrays = dict(index=rng.integers(0, 2**40, b).astype(np.uint64), state=rng.random((b, d)).astype(state_dtype),
                  action=rng.integers(-1, 40, b).astype(np.int16), reward=rng.random(b).astype(np.float32),
                  discount=rng.random(b).astype(np.float32), next_state=rng.random((b, d)).astype(state_dtype),
                  weight=rng.random(b).astype(np.float32), actor=rng.integers(0, 3, b).astype(np.uint8),
                  expert_action=rng.integers(-1, 44, b).astype(np.int16))
    spare = np.empty(10, np.uint8)  # too small: InPlace allocates its own
    for buffer in (None, spare, np.full(20_000_000, 7, np.uint8)):
        out = InPlace(SampleReply, {"request_id": 2**40 + b, "error": None},
                      {k: (v.dtype, v.shape) for k, v in arrays.items()}, buffer=buffer)
        for k, v in arrays.items():
            out.arrays[k][...] = v
        assert bytes(out.finish()) == encode(SampleReply(2**40 + b, None, **arrays))


def test_inplace_checks_the_message():
    out = InPlace(PriorityUpdate, {"request_id": 1}, {"index": (np.uint64, (5,)), "priority": (np.float32, (4,))})
    with pytest.raises(MessageError):
        out.finish()
    with pytest.raises(MessageError):
        InPlace(PriorityUpdate, {"request_id": 1}, {"index": (np.uint64, (5,))})


def linked_streams(rng, streams=3, rows=400):
    """Interleaved streams in one ring: returns the ring's columns with `next` links, and each
    stream's positions in order (to run `compute` on the stream unrolled)."""
    order = rng.permutation(np.repeat(np.arange(streams), rows))
    total = len(order)
    ep = np.empty(total, np.int64)
    term, trunc = np.zeros(total, bool), np.zeros(total, bool)
    nxt = np.full(total, -1, np.int64)
    positions = [np.flatnonzero(order == s) for s in range(streams)]
    for s, pos in enumerate(positions):
        e, left = s * 10_000, 0
        for i, p in enumerate(pos):
            if left == 0:
                e, left = e + 1, int(rng.integers(1, 12))
            ep[p] = e
            left -= 1
            if left == 0:
                kind = rng.random()
                term[p], trunc[p] = kind < 0.4, 0.4 <= kind < 0.8  # else: a lost end
        nxt[pos[:-1]] = pos[1:]
    cols = dict(episode_id=ep, reward=rng.standard_normal(total).astype(np.float32), terminal=term, truncated=trunc)
    return cols, nxt, positions


@pytest.mark.parametrize("n", [1, 2, 3, 5, 9])
def test_over_links_matches_compute(n):
    rng = np.random.default_rng(n)
    cols, nxt, positions = linked_streams(rng)
    for pos in positions:
        want = NStepReturns.compute(np.arange(len(pos)), n, 0.9, valid_len=len(pos),
                                    **{k: v[pos] for k, v in cols.items()})
        got = NStepReturns.over_links(pos, n, 0.9, next_pos=nxt, **cols)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], pos[want[2]])
        np.testing.assert_array_equal(got[3], want[3])


def test_sumtree_sums_and_draws():
    rng = np.random.default_rng(0)
    tree = SumTree(5000)
    leaves = np.zeros(tree.size)
    for it in range(40):
        if it % 2:
            start = int(rng.integers(0, 5000 - 64))
            slots = np.arange(start, start + 64)      # an insert's run of slots
        else:
            slots = rng.integers(0, 5000, int(rng.integers(1, 3000)))
        p = rng.random(len(slots)) * (rng.random(len(slots)) > 0.3)
        tree.set(slots, p)
        leaves[slots] = p
        level = leaves
        for depth in range(tree.depth, -1, -1):       # every level is the pairwise sums below it
            np.testing.assert_allclose(tree.tree[1 << depth:2 << depth], level, rtol=1e-12, atol=1e-12)
            level = level[0::2] + level[1::2]
    u = np.sort(rng.random(20000)) * tree.total
    slots = tree.sample(u)
    np.testing.assert_array_equal(slots, np.searchsorted(np.cumsum(leaves), u, side="right").clip(max=4999))
    assert np.all(leaves[slots] > 0)
