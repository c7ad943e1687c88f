"""ReplayMirror.priority_snapshot / restore_priorities: priorities across a rebuild."""
import numpy as np
import pytest

from services.replay.mirror import ReplayMirror
from tempest_common.messages import TransitionBatch

D = 4


def batch(stream: str, rows: int, truncated_last: bool = False) -> TransitionBatch:
    truncated = np.zeros(rows, bool)
    truncated[-1] = truncated_last
    return TransitionBatch(stream, "w", np.zeros(rows, np.int64), np.arange(rows, dtype=np.int32),
                           np.zeros(rows, np.uint8), np.zeros(rows, np.int16), np.ones(rows, np.float32),
                           np.zeros(rows, np.float32), np.zeros(rows, bool), truncated,
                           np.zeros((rows, D), np.float16))


def filled(capacity: int, alpha: float, rows: int) -> ReplayMirror:
    m = ReplayMirror(capacity, D, alpha=alpha)
    m.insert(batch("s", rows, truncated_last=True))
    return m


@pytest.mark.parametrize("alpha_then, alpha_now", [(0.6, 0.6), (1.0, 0.5), (0.5, 1.0)])
def test_rebuilt_mirror_gets_the_priorities_back(alpha_then, alpha_now):
    before = filled(100, alpha_then, 30)
    index = np.arange(29)                         # row 29 is truncated: never a sample start
    priority = np.linspace(0.1, 5.0, 29)
    before.update_priorities(index, priority)
    seq, leaf = before.priority_snapshot()
    assert list(seq) == list(range(29))           # the truncated row is not in the snapshot
    after = filled(100, alpha_now, 30)            # a rebuild: the same rows, all at max priority
    assert np.allclose(after.tree.get(np.arange(29)), 1.0)
    assert after.restore_priorities(seq, leaf, alpha_then, before.max_priority) == 29
    assert np.allclose(after.tree.get(np.arange(29)), priority ** alpha_now, rtol=1e-5)
    assert after.tree.get(np.array([29]))[0] == 0.0
    assert after.max_priority == pytest.approx(5.0)


def test_overwritten_rows_keep_the_maximum_priority():
    before = filled(20, 1.0, 20)
    before.update_priorities(np.arange(19), np.full(19, 0.25))
    seq, leaf = before.priority_snapshot()
    after = ReplayMirror(20, D, alpha=1.0)
    after.insert(batch("s", 20))
    after.insert(batch("s", 5))                   # seqs 20-24 overwrite slots 0-4
    assert after.restore_priorities(seq, leaf, 1.0, 0.25) == 14
    assert np.allclose(after.tree.get(np.arange(5)), 1.0)
    assert np.allclose(after.tree.get(np.arange(5, 19)), 0.25)


def test_a_snapshot_taken_without_prioritization_restores_nothing():
    before = filled(50, 0.0, 10)
    seq, leaf = before.priority_snapshot()
    after = filled(50, 0.6, 10)
    assert after.restore_priorities(seq, leaf, 0.0, 1.0) == 0
    assert np.allclose(after.tree.get(np.arange(9)), 1.0)


def test_rows_the_snapshot_does_not_cover_get_the_restored_maximum():
    before = filled(100, 1.0, 10)
    before.update_priorities(np.arange(9), np.full(9, 50.0))
    seq, leaf = before.priority_snapshot()
    after = filled(100, 1.0, 10)
    after.insert(batch("t", 5))                   # rows inserted after the snapshot
    assert after.restore_priorities(seq, leaf, 1.0, before.max_priority) == 9
    assert np.allclose(after.tree.get(np.arange(10, 15)), 50.0)


@pytest.mark.parametrize("alpha", [float("nan"), -1.0, 0.0])
def test_a_snapshot_with_a_bad_alpha_is_ignored(alpha):
    after = filled(50, 0.6, 10)
    assert after.restore_priorities(np.arange(9), np.full(9, 3.0, np.float32), alpha, 3.0) == 0
    assert np.allclose(after.tree.get(np.arange(9)), 1.0)
