"""New rows' priority in ReplayMirror: the maximum seen, or capped by PER_NEW_PRIORITY_CAP x the
running mean of the priority updates (hand-computed leaves: leaf = priority ** alpha)."""
import numpy as np
import pytest

from services.replay.config import load_replay_config
from services.replay.mirror import ReplayMirror
from tempest_common.config import ConfigError
from tempest_common.messages import TransitionBatch

D, ALPHA = 4, 0.5
SPIKE = np.array([1000.0] + [1.0] * 9)   # one spike and nine typical: mean 1009 / 10 = 100.9, max 1000


def batch(rows: int, truncated_last: bool = False) -> TransitionBatch:
    truncated = np.zeros(rows, bool)
    truncated[-1] = truncated_last
    return TransitionBatch("s", "w", np.zeros(rows, np.int64), np.arange(rows, dtype=np.int32),
                           np.zeros(rows, np.uint8), np.zeros(rows, np.int16), np.ones(rows, np.float32),
                           np.zeros(rows, np.float32), np.zeros(rows, bool), truncated,
                           np.zeros((rows, D), np.float16))


def spiked(cap: float) -> ReplayMirror:
    m = ReplayMirror(100, D, alpha=ALPHA, new_priority_cap=cap)
    m.insert(batch(10))
    assert np.allclose(m.tree.get(np.arange(10)), 1.0)        # no update yet: the initial maximum, 1
    m.update_priorities(np.arange(10), SPIKE)
    return m


def test_capped_new_rows_get_cap_times_mean_not_the_spike():
    m = spiked(cap=2.0)
    assert m.max_priority == 1000.0                              # the maximum still ratchets up
    assert m.priority_count == 10 and m.priority_sum == pytest.approx(1009.0)
    assert m.new_priority() == pytest.approx(201.8)              # min(1000, 2 * 100.9)
    m.insert(batch(5, truncated_last=True))                      # rows 10..14; 14 bootstrap-only
    leaves = m.tree.get(np.arange(10, 15))
    assert leaves[:4] == pytest.approx([201.8 ** 0.5] * 4)       # 14.2056..., not 1000 ** 0.5 = 31.62
    assert leaves[4] == 0.0
    assert m.tree.get(np.arange(10)) == pytest.approx(SPIKE ** ALPHA)   # updated rows untouched


def test_cap_off_is_todays_maximum_priority():
    m = spiked(cap=0.0)
    m.insert(batch(3))
    assert m.tree.get(np.arange(10, 13)) == pytest.approx([1000.0 ** 0.5] * 3)


def test_a_loose_cap_never_exceeds_the_maximum():
    m = spiked(cap=20.0)                                         # 20 * 100.9 = 2018 > 1000
    m.insert(batch(2))
    assert m.tree.get(np.arange(10, 12)) == pytest.approx([1000.0 ** 0.5] * 2)


def test_running_mean_counts_only_live_updates():
    m = spiked(cap=1.0)
    # seq 200 (never issued), nan and negative priorities are ignored, in the mean too
    ignored = m.update_priorities(np.array([200, 1, 2, 3]), np.array([5.0, np.nan, -1.0, 3.0]))
    assert ignored == {"stale": 0, "bad_index": 1, "nonfinite": 1, "nonpositive": 1, "clamped": 0}
    assert m.priority_count == 11 and m.priority_sum == pytest.approx(1012.0)
    m.insert(batch(1))
    assert m.tree.get(np.array([10]))[0] == pytest.approx((1012.0 / 11) ** 0.5)


def test_restore_seeds_the_mean_and_caps_rows_inserted_since():
    before = spiked(cap=2.0)
    seq, leaf = before.priority_snapshot()
    after = ReplayMirror(100, D, alpha=ALPHA, new_priority_cap=2.0)
    after.insert(batch(13))                                      # 10 in the snapshot, 3 inserted since
    assert after.restore_priorities(seq, leaf, ALPHA, before.max_priority) == 10
    assert after.priority_count == 10 and after.priority_sum == pytest.approx(1009.0, rel=1e-5)
    assert after.tree.get(np.arange(10, 13)) == pytest.approx([201.8 ** 0.5] * 3, rel=1e-5)
    plain = ReplayMirror(100, D, alpha=ALPHA)                    # cap off: today's maximum
    plain.insert(batch(13))
    plain.restore_priorities(seq, leaf, ALPHA, before.max_priority)
    assert plain.tree.get(np.arange(10, 13)) == pytest.approx([1000.0 ** 0.5] * 3)


def test_setting_default_off_and_validated():
    assert load_replay_config({}).new_priority_cap == 0.0
    assert load_replay_config({"PER_NEW_PRIORITY_CAP": "3"}).new_priority_cap == 3.0
    with pytest.raises(ConfigError, match="PER_NEW_PRIORITY_CAP"):
        load_replay_config({"PER_NEW_PRIORITY_CAP": "-1"})


@pytest.mark.parametrize("cap", [0.0, 2.0])
def test_a_reset_forgets_the_spike_for_new_rows_but_keeps_each_rows_priority(cap):
    """What a PriorityReset does (after a learner rollback): new rows enter at the initial
    priority, 1, whether or not PER_NEW_PRIORITY_CAP is on; rows keep the priorities they have."""
    m = spiked(cap)
    assert m.reset_max_priority() == 1000.0
    assert (m.max_priority, m.priority_sum, m.priority_count) == (1.0, 0.0, 0)
    m.insert(batch(3))
    assert m.tree.get(np.arange(10, 13)) == pytest.approx([1.0] * 3)
    assert m.tree.get(np.arange(10)) == pytest.approx(SPIKE ** ALPHA)
    m.update_priorities(np.arange(10, 13), np.array([2.0, 3.0, 4.0]))   # and it ratchets again from there
    assert m.max_priority == 4.0 and m.priority_count == 3


def test_the_share_of_sampled_rows_never_trained_on_shows_the_ratchet():
    """Uncapped: after one spike every new row outranks the trained ones ~30x (leaf 1000^0.5 vs
    1), so a sample is nearly all new rows; the priority statistics say so."""
    m = spiked(cap=0.0)
    assert m.priority_mean() == pytest.approx(100.9) and m.new_priority() == 1000.0
    m.insert(batch(10))                                   # rows 10..19 enter at the spike
    m.sample(200, 1, 0.9, prioritized=True, beta=0.4, rng=np.random.default_rng(0))
    # leaves: rows 0..9 one at 1000 ** 0.5 and nine at 1; the new rows 10..19 at 1000 ** 0.5 each
    assert m.sampled_fresh_share > 0.8
    m.update_priorities(np.arange(10, 20), np.ones(10))   # trained on: no longer new
    m.sample(200, 1, 0.9, prioritized=True, beta=0.4, rng=np.random.default_rng(1))
    assert m.sampled_fresh_share == 0.0


def test_no_priority_mean_before_the_first_update():
    m = ReplayMirror(100, D, alpha=ALPHA)
    m.insert(batch(10))
    assert np.isnan(m.priority_mean())
    m.sample(50, 1, 0.9, prioritized=False, beta=0.0, rng=np.random.default_rng(0))
    assert m.sampled_fresh_share == 1.0
