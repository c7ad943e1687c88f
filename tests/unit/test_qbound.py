"""Q against its bound (issue 16): the bound's arithmetic (services/learner/qbound.py) against
hand-computed values and against the rewards the worker's own code makes, and the bookkeeper's
per-worker reward settings from heartbeats (widest when workers disagree, bounded memory)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import zmq

from services.emulator.episodes import RewardConfig, game_reward
from services.learner.bookkeeper import MAX_WORKERS, Bookkeeper
from services.learner.qbound import RewardSettings, q_bound, widest
from tempest_common.messages import Heartbeat
from tempest_common.wire import encode
from tests.unit.test_probe import learner  # noqa: F401  (the fixture: a real Learner on free ports)
from tests.unit.test_wire_bounds import wire


def rs(clip=10.0, death_penalty=5.0, survival_bonus=0.0, scale=0.01) -> RewardSettings:
    return RewardSettings(scale, clip, death_penalty, survival_bonus)


@pytest.mark.parametrize("settings,gamma,expected", [
    # the emulator's defaults and the learner's GAMMA: [0 - 5, 10 / 0.005]
    (rs(), 0.995, (-5.0, 2000.0)),
    # a negative survival bonus pays every tick: -0.25 / 0.01 - 5 = -30; the upper ignores it: 10 / 0.01
    (rs(survival_bonus=-0.25), 0.99, (-30.0, 1000.0)),
    # a positive one adds to the clip: (2 + 0.5) / (1 - 0.9) = 25; the lower is the death penalty alone
    (rs(clip=2.0, death_penalty=1.0, survival_bonus=0.5), 0.9, (-1.0, 25.0)),
    # gamma 0: one tick: [min(0, -1) - 3, 4 + max(0, -1)]
    (rs(clip=4.0, death_penalty=3.0, survival_bonus=-1.0), 0.0, (-4.0, 4.0)),
    # gamma 0.5: sum of gamma^k = 2: [-0.5 x 2 - 0, (1 + 0) x 2]
    (rs(clip=1.0, death_penalty=0.0, survival_bonus=-0.5), 0.5, (-1.0, 2.0)),
    # nothing rewarded or penalised: Q is 0
    (rs(clip=0.0, death_penalty=0.0), 0.99, (0.0, 0.0)),
])
def test_hand_computed_bounds(settings, gamma, expected):
    lo, hi = q_bound(settings, gamma)
    assert lo == pytest.approx(expected[0], rel=1e-12, abs=1e-12)
    assert hi == pytest.approx(expected[1], rel=1e-12, abs=1e-12)


def test_the_scale_does_not_enter_the_bound():
    """The clip applies after the scale (it is in reward units), so only the clip bounds the points."""
    assert q_bound(rs(scale=0.01), 0.99) == q_bound(rs(scale=1.0), 0.99) == q_bound(rs(scale=0.0), 0.99)


def test_gamma_1_leaves_a_side_unbounded_unless_its_per_tick_term_is_0():
    assert q_bound(rs(), 1.0) == (-5.0, math.inf)
    assert q_bound(rs(survival_bonus=-0.1), 1.0) == (-math.inf, math.inf)
    assert q_bound(rs(clip=0.0, survival_bonus=0.0), 1.0) == (-5.0, 0.0)
    for gamma in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError):
            q_bound(rs(), gamma)


def test_widest_takes_the_lowest_lower_and_the_highest_upper():
    assert widest([(-5.0, 2000.0), (-30.0, 1000.0)]) == (-30.0, 2000.0)
    assert widest([(-1.0, 2.0)]) == (-1.0, 2.0)
    assert widest([]) is None
    assert widest(iter([(0.0, 1.0), (-2.0, 0.5)])) == (-2.0, 1.0)


def life_return(deltas, died: bool, cfg: RewardConfig, gamma: float) -> float:
    """The discounted return of one life, each tick's reward made as the worker makes it
    (episodes.EpisodeTracker._outcome: game reward + shaping, no shaping on the death edge)."""
    total, g = 0.0, 1.0
    for i, delta in enumerate(deltas):
        death_edge = died and i == len(deltas) - 1
        total += g * (game_reward(int(delta), death_edge, cfg) + (0.0 if death_edge else cfg.survival_bonus))
        g *= gamma
    return total


@pytest.mark.parametrize("bonus", [0.0, -0.3, 0.2])
def test_the_bound_holds_for_the_rewards_the_worker_makes_and_is_reached(bonus):
    cfg = RewardConfig(scale=0.01, clip=10.0, death_penalty=5.0, survival_bonus=bonus)
    gamma = 0.9
    lo, hi = q_bound(RewardSettings(cfg.scale, cfg.clip, cfg.death_penalty, cfg.survival_bonus), gamma)
    rng = np.random.default_rng(0)
    for _ in range(300):   # lives of random length and points (a tick's points: 0 to far past the clip)
        n = int(rng.integers(1, 200))
        deltas = rng.choice([0, 10, 25, 150, 1000, 5000], size=n)
        ret = life_return(deltas, bool(rng.integers(0, 2)), cfg, gamma)
        assert lo - 1e-9 <= ret <= hi + 1e-9
    # the extremes: a life that dies on its first tick without points, one that lives long without
    # points, one at the clip every tick
    die_at_once = life_return([0], True, cfg, gamma)
    live_long = life_return([0] * 400, False, cfg, gamma)
    best = life_return([10_000] * 400, False, cfg, gamma)
    if bonus >= 0:   # tight: reached
        assert die_at_once == pytest.approx(lo) and best == pytest.approx(hi, rel=1e-9)
    else:            # valid, not tight (qbound.py): the worst life earns min(-death_penalty, bonus / (1 - gamma))
        worst = min(die_at_once, live_long)
        assert worst == pytest.approx(min(-cfg.death_penalty, bonus / (1 - gamma)), rel=1e-9) and worst > lo
        assert best == pytest.approx((cfg.clip + bonus) / (1 - gamma), rel=1e-9) and best < hi


def hb(worker, frames=100, **rewards) -> Heartbeat:
    return Heartbeat(worker, frames, 0, 600.0, 270.0, 0.0, **rewards)


def rewards(clip=10.0, death_penalty=5.0, survival_bonus=0.0, scale=0.01) -> dict:
    return dict(reward_scale=scale, reward_clip=clip, death_penalty=death_penalty, survival_bonus=survival_bonus)


def test_books_have_no_bound_until_a_worker_reports_its_reward_settings():
    b = Bookkeeper()
    assert b.q_bound(0.995) is None
    b.on_heartbeat(hb("a"))   # a heartbeat without them (schema 2): unknown, changes nothing
    assert b.q_bound(0.995) is None and b.reward_settings() == {}
    b.on_heartbeat(hb("a", 200, **rewards()))
    assert b.q_bound(0.995) == pytest.approx((-5.0, 2000.0))
    assert b.q_bound(0.99) == pytest.approx((-5.0, 1000.0))   # the gamma is the caller's (the live one)
    b.on_heartbeat(hb("a", 300))   # a later heartbeat that does not say keeps what it said
    assert b.reward_settings() == {"a": RewardSettings(0.01, 10.0, 5.0, 0.0)}
    assert b.global_frames == 300


def test_books_take_the_widest_bound_when_workers_disagree_and_each_workers_latest():
    b = Bookkeeper()
    b.on_heartbeat(hb("a", **rewards()))
    b.on_heartbeat(hb("b", **rewards(clip=20.0, death_penalty=1.0)))
    b.on_heartbeat(hb("c", **rewards(survival_bonus=-0.25)))
    # lower: c's -0.25/0.01 - 5 = -30; upper: b's 20/0.01 = 2000
    assert b.q_bound(0.99) == pytest.approx((-30.0, 2000.0))
    b.on_heartbeat(hb("c", 200, **rewards()))   # c restarted with the defaults: its old settings no longer count
    assert b.q_bound(0.99) == pytest.approx((-5.0, 2000.0))
    b.on_heartbeat(hb("b", 200, **rewards()))
    assert b.q_bound(0.99) == pytest.approx((-5.0, 1000.0))
    assert len(b._reward_kinds) == 1 and b._reward_kinds[RewardSettings(0.01, 10.0, 5.0, 0.0)] == 3


def test_reward_settings_of_random_worker_ids_stay_bounded():
    b = Bookkeeper()
    for i in range(MAX_WORKERS + 20):
        b.on_heartbeat(hb(f"w{i}", **rewards(clip=float(i % 1000))))
    assert len(b.reward_settings()) == MAX_WORKERS
    assert sum(b._reward_kinds.values()) == MAX_WORKERS
    assert "w0" not in b.reward_settings() and f"w{MAX_WORKERS + 19}" in b.reward_settings()
    assert b.q_bound(0.5) == pytest.approx((-5.0, 999.0 / 0.5))


# -- the learner: Learner.q_bound(), the gauges, heartbeats through its inbox ---------------------
def test_the_learner_bounds_q_from_heartbeats_at_the_live_gamma_and_refuses_lying_ones(learner):
    learner = learner()
    m = learner.metrics

    def value(name, **labels) -> float:
        return next(s.value for metric in (m.q_bound_lower, m.q_bound_upper, m.malformed)
                    for family in metric.collect() for s in family.samples if s.name == name and s.labels == labels)

    assert learner.q_bound() is None
    learner._export_books()
    assert math.isnan(value("tempest_learner_q_bound_lower")) and math.isnan(value("tempest_learner_q_bound_upper"))
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(learner.cfg.episodes_bind.replace("*", "127.0.0.1"))
    try:
        push.send(encode(hb("w1", **rewards(survival_bonus=-0.25))))
        push.send(wire(hb("w2", **rewards(death_penalty=1e300))))                  # a lie: refused, counted
        push.send(wire(hb("w3", **{**rewards(), "reward_clip": float("nan")})))   # only one unknown: a lie
        push.send(encode(hb("w4", **rewards(clip=20.0))))
        for _ in range(50):
            if learner.inbox.poll(200):
                learner._drain_inbox()
            if learner.books.reward_settings().keys() == {"w1", "w4"} \
                    and value("tempest_learner_malformed_total", reason="bad_field") == 2:
                break
    finally:
        push.close(0)
    assert value("tempest_learner_malformed_total", reason="bad_field") == 2
    assert learner.books.reward_settings().keys() == {"w1", "w4"}
    # GAMMA 0.995: lower = w1's -0.25 / 0.005 - 5 = -55, upper = w4's 20 / 0.005 = 4000
    assert learner.q_bound() == pytest.approx((-55.0, 4000.0))
    assert value("tempest_learner_q_bound_lower") == pytest.approx(-55.0)
    assert value("tempest_learner_q_bound_upper") == pytest.approx(4000.0)
    learner.change_settings({"gamma": 0.99})   # the live gamma: -0.25 / 0.01 - 5 = -30, 20 / 0.01 = 2000
    assert learner.q_bound() == pytest.approx((-30.0, 2000.0))
    learner._export_books()
    assert value("tempest_learner_q_bound_upper") == pytest.approx(2000.0)
