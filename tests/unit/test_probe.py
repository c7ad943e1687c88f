"""Q on a fixed probe set of states (issue 16, services/learner/probe.py): the first PROBE_STATES
states trained on, measured every PROBE_EVERY_STEPS steps as max over actions of the online Q,
exported as tempest_learner_probe_q_*, carried through checkpoints (older ones still load)."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry
from torch import nn

from services.learner.metrics import LearnerMetrics
from services.learner.probe import PROBE_EVERY_STEPS, PROBE_STATES, ProbeSet
from tempest_common.messages import SampleReply

D, A = 3, 4


def states(start: int, n: int, dtype=np.float16) -> np.ndarray:
    """n distinct rows [start, start + n) x D (exact in float16)."""
    return (np.arange(start * D, (start + n) * D).reshape(n, D) / 8).astype(dtype)


def reply(s: np.ndarray) -> SampleReply:
    b = len(s)
    return SampleReply(1, None, np.arange(b, dtype=np.uint64), s, np.zeros(b, np.int16), np.zeros(b, np.float32),
                       np.zeros(b, np.float32), s, np.ones(b, np.float32), np.zeros(b, np.uint8),
                       np.full(b, -1, np.int16))


def linear_q() -> nn.Module:
    """Q(s) = W s + c with known weights: the expected probe figures are computed by hand below."""
    net = nn.Linear(D, A)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, -1.0, -1.0]]))
        net.bias.copy_(torch.tensor([0.0, 0.5, -0.5, 2.0]))
    return net


class Recorder:
    def __init__(self):
        self.calls = []

    def export_probe_q(self, stats):
        self.calls.append(stats)


def test_the_first_states_trained_on_are_kept_in_order_and_then_no_more():
    p = ProbeSet(size=5)
    assert not p.offer(states(0, 2))
    assert p.states is None and p.collected == 2
    assert p.offer(states(2, 4))          # 3 of these 4 make it whole
    assert not p.offer(states(100, 3))    # whole: nothing more is taken
    np.testing.assert_array_equal(p.states, states(0, 5, np.float32))
    assert p.states.dtype == np.float32 and p.collected == 5


def test_the_kept_states_are_copies_not_views_of_the_batch():
    p = ProbeSet(size=2)
    batch = states(0, 2, np.float32)
    p.offer(batch)
    batch[:] = 99.0
    np.testing.assert_array_equal(p.states, states(0, 2, np.float32))


def test_measure_is_min_max_mean_of_the_greedy_q_by_hand():
    p = ProbeSet(size=2)
    assert p.measure(linear_q()) is None   # nothing until the set is whole
    p.offer(np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, -2.0]], np.float32))
    # state 1: Q = [1, 2.5, 2.5, -4] -> max 2.5; state 2: Q = [-1, 0.5, -2.5, 5] -> max 5
    lo, hi, mean = p.measure(linear_q())
    assert (lo, hi, mean) == pytest.approx((2.5, 5.0, 3.75))


def test_measure_is_every_n_steps_and_on_the_step_that_fills_the_set():
    p, rec, net = ProbeSet(size=4, every=3), Recorder(), linear_q()
    p.after_step(1, net, [reply(states(0, 2))], rec)   # not whole yet: nothing exported
    assert rec.calls == []
    p.after_step(2, net, [reply(states(2, 1)), reply(states(3, 5))], rec)   # whole now (k micro-batches)
    assert len(rec.calls) == 1
    p.after_step(3, net, [reply(states(50, 2))], rec)   # step 3: due
    p.after_step(4, net, [reply(states(60, 2))], rec)
    p.after_step(5, net, [reply(states(70, 2))], rec)
    p.after_step(6, net, [reply(states(80, 2))], rec)   # step 6: due
    assert len(rec.calls) == 3 and rec.calls[0] == rec.calls[1] == rec.calls[2]   # the same states, same net
    np.testing.assert_array_equal(p.states, states(0, 4, np.float32))


def test_the_defaults_are_cheap():
    assert PROBE_STATES == 256 and PROBE_EVERY_STEPS == 50


def test_metrics_are_nan_until_measured_then_the_figures():
    registry = CollectorRegistry()
    metrics = LearnerMetrics(registry)
    names = ("tempest_learner_probe_q_min", "tempest_learner_probe_q_max", "tempest_learner_probe_q_mean")
    assert all(math.isnan(registry.get_sample_value(n)) for n in names)
    p = ProbeSet(size=2, every=1)
    p.after_step(1, linear_q(), [reply(np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, -2.0]], np.float32))], metrics)
    assert [registry.get_sample_value(n) for n in names] == pytest.approx([2.5, 5.0, 3.75])
    assert "max_a Q_online" in registry._names_to_collectors["tempest_learner_probe_q_mean"]._documentation


def round_trip(state: dict) -> dict:
    """Through torch.save and torch.load(weights_only=True), as checkpoints are."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_state_round_trip_and_what_is_not_taken():
    p = ProbeSet(size=3)
    p.offer(states(0, 3))
    saved = round_trip({"probe": p.state_dict()})["probe"]
    q = ProbeSet(size=3)
    q.load_state_dict(saved, D)
    np.testing.assert_array_equal(q.states, p.states)
    assert q.measure(linear_q()) == p.measure(linear_q())
    q.offer(states(9, 3))   # restored whole: collects no more
    np.testing.assert_array_equal(q.states, p.states)

    fresh = ProbeSet(size=3)
    fresh.load_state_dict(None, D)                                      # an older checkpoint: none saved
    fresh.load_state_dict(round_trip(ProbeSet(size=3).state_dict()), D)  # saved before it was whole
    assert fresh.states is None
    fresh.load_state_dict(saved, D + 1)                                 # another STATE_DIM: not taken
    bad = saved["states"].clone()
    bad[0, 0] = float("nan")
    fresh.load_state_dict({"states": bad}, D)                           # not finite: not taken
    assert fresh.states is None and fresh.collected == 0


# -- the learner: the probe in its checkpoints ------------------------------------------------------
@pytest.fixture()
def learner(learners):
    """make() -> a new Learner (a new run) with STATE_DIM D writing to tmp_path/ckpt (test_checkpoint's)."""
    return lambda: learners(STATE_DIM=str(D), HIDDEN="8")


def test_the_probe_set_is_checkpointed_and_older_checkpoints_still_restore(learner):
    first = learner()
    first.probe.after_step(1, first.online, [reply(states(0, PROBE_STATES))], first.metrics)
    saved = round_trip(first.checkpoint_dict())
    assert saved["probe"]["states"].shape == (PROBE_STATES, D)
    resumed = learner()
    resumed.restore(saved)
    np.testing.assert_array_equal(resumed.probe.states, first.probe.states)
    older = learner()
    older.restore({k: v for k, v in saved.items() if k != "probe"})   # a checkpoint from before the probe
    assert older.probe.states is None and older.steps == first.steps


def test_the_learners_optimizer_step_fills_the_probe_and_exports_its_q(learner):
    """Learner.step (the priorities go to a replay address nobody listens on: ZeroMQ queues them)."""
    lrn = learner()
    assert all(math.isnan(v) for v in probe_gauges(lrn))
    lrn.step([reply(states(0, PROBE_STATES // 2))])
    assert lrn.probe.states is None and all(math.isnan(v) for v in probe_gauges(lrn))
    lrn.step([reply(states(PROBE_STATES // 2, PROBE_STATES))])   # whole on this step: measured at once
    assert lrn.steps == 2
    np.testing.assert_array_equal(lrn.probe.states, states(0, PROBE_STATES, np.float32))
    assert probe_gauges(lrn) == pytest.approx(lrn.probe.measure(lrn.online))


def probe_gauges(lrn) -> list[float]:
    m = lrn.metrics
    return [g.collect()[0].samples[0].value for g in (m.probe_q_min, m.probe_q_max, m.probe_q_mean)]
