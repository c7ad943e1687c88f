"""The learner's bookkeeping: global frames, schedule floor, performance windows (per game and per
life, with their counts) and slopes."""
import numpy as np
import pytest

from services.learner.bookkeeper import (MAX_FRAMES_PER_HEARTBEAT, MAX_WORKER_KEY, MAX_WORKERS, Bookkeeper,
                                         expert_ratio, slope)
from services.learner.settings import apply_changes, load_live_settings
from tempest_common.config import ConfigError
from tempest_common.messages import EpisodeSummary, Heartbeat


def hb(worker, frames):
    return Heartbeat(worker, frames, 0, 600.0, 270.0, 0.0)


def advance(b, worker, frames, to, step=500_000):
    """Heartbeats of `worker` every `step` frames from `frames` up to `to` (a real worker's are far
    closer than MAX_FRAMES_PER_HEARTBEAT)."""
    while frames < to:
        frames = min(frames + step, to)
        b.on_heartbeat(hb(worker, frames))


def ep(score, evaluation=True, game_over=True, reward=1.0):
    return EpisodeSummary("s", "w", 0, 0, evaluation, 10, reward, 0.0, 0, score, 0, "terminal", game_over, {}, 0.0)


def test_global_frames_add_per_worker_increases_and_survive_restarts():
    b = Bookkeeper()
    b.on_heartbeat(hb("a", 100))
    b.on_heartbeat(hb("b", 50))
    b.on_heartbeat(hb("a", 250))
    b.on_heartbeat(hb("a", 30))   # worker a restarted: its counter began again
    assert b.global_frames == 250 + 50 + 30


def test_an_implausible_heartbeat_counts_nothing_and_becomes_the_baseline():
    """A forged counter (2^53: the wire's bound) once jumped the run to the expert floor."""
    b = Bookkeeper()
    assert b.on_heartbeat(hb("a", 5_000)) == 5_000
    assert b.on_heartbeat(hb("a", 2**53)) is None
    assert b.global_frames == 5_000
    # the real worker's next heartbeat is below the forged baseline: taken as a restart, counted in full
    assert b.on_heartbeat(hb("a", 6_000)) == 6_000
    assert b.on_heartbeat(hb("a", 7_000)) == 1_000
    assert b.global_frames == 12_000
    # a jump of exactly the bound is believed; one frame more is not
    assert b.on_heartbeat(hb("a", 7_000 + MAX_FRAMES_PER_HEARTBEAT)) == MAX_FRAMES_PER_HEARTBEAT
    assert b.on_heartbeat(hb("b", MAX_FRAMES_PER_HEARTBEAT + 1)) is None   # a worker's first heartbeat too
    assert b.on_heartbeat(hb("b", MAX_FRAMES_PER_HEARTBEAT + 11)) == 10
    assert b.schedule(0.95, 0.996, 10_000, 0.10, 0.1).expert_ratio > 0.10


def test_random_worker_ids_cannot_grow_the_books_without_bound():
    b = Bookkeeper()
    for i in range(MAX_WORKERS + 50):
        b.on_heartbeat(hb(f"w{i}", 1))
        if i == MAX_WORKERS - 1:
            b.on_heartbeat(hb("w0", 2))   # heard again before the books are full: kept
    kept = b.state_dict()["worker_frames"]
    assert len(kept) == MAX_WORKERS and "w0" in kept and "w51" in kept   # the least recently heard went:
    assert not any(f"w{i}" in kept for i in range(1, 51))                 # w1..w50


def test_huge_worker_ids_are_kept_short_and_still_told_apart():
    b = Bookkeeper()
    a, c = "w" * 60_000 + "a", "w" * 60_000 + "c"
    for worker in (a, c):
        b.on_heartbeat(hb(worker, 100))
    assert b.on_heartbeat(hb(a, 150)) == 50      # the same worker: an increase, not a new one
    keys = list(b.state_dict()["worker_frames"])
    assert len(keys) == 2 and all(len(k) <= MAX_WORKER_KEY for k in keys) and b.global_frames == 250
    assert b.on_heartbeat(hb("emulator-5600", 10)) == 10 and "emulator-5600" in b.state_dict()["worker_frames"]


def test_books_with_impossible_counters_do_not_load():
    b = Bookkeeper()
    b.on_heartbeat(hb("w", 1_000))
    for key, value in (("global_frames", 2**64 - 1), ("episodes", -1), ("worker_frames", {"w": 2**53 + 1})):
        with pytest.raises(ValueError, match="outside 0..2"):
            Bookkeeper().load_state_dict({**b.state_dict(), key: value})


@pytest.mark.parametrize("frames,expected", [(0, 0.95), (10_000, 0.95 * 0.996), (10**7, 0.10), (10**9, 0.10)])
def test_schedule_decays_and_honours_its_floor(frames, expected):
    assert expert_ratio(frames, 0.95, 0.996, 10_000, 0.10) == pytest.approx(expected)


def test_reward_windows_and_slope():
    b = Bookkeeper()
    for i in range(12):
        b.on_heartbeat(hb("w", (i + 1) * 500_000))   # one evaluation game every 0.5M frames
        b.on_episode(ep(1000 + 100 * i))
    # the 1M window holds the games ended in the last 1M frames: at 5.5M and 6.0M (and 5.0M)
    assert b.reward_mean("1M") == pytest.approx(np.mean([1900, 2000, 2100]))
    assert b.reward_slope("5M") == pytest.approx(200.0)   # +100 points per 0.5M frames
    non_eval = Bookkeeper()
    non_eval.on_episode(ep(5000, evaluation=False))
    assert non_eval.reward_mean("5M") is None


def life(score, game_score=0, evaluation=True, game_over=False, end="terminal"):
    return EpisodeSummary("s", "w", 0, 0, evaluation, 10, 1.0, 0.0, score, game_score, 0, end, game_over, {}, 0.0)


def test_per_life_and_per_game_windows_with_their_counts():
    b = Bookkeeper()
    b.on_heartbeat(hb("w", 500_000))
    b.on_episode(life(100))
    b.on_episode(life(300, game_score=400, game_over=True))   # game 1: 400 points over two lives
    advance(b, "w", 500_000, 2_000_000)
    b.on_episode(life(5000, evaluation=False))               # a training life: no performance figure
    b.on_episode(life(50, end="truncated"))                   # cut short (MAME restart), not lost
    advance(b, "w", 2_000_000, 4_000_000)
    b.on_episode(life(200))
    b.on_episode(life(600, game_score=800, game_over=True))
    advance(b, "w", 4_000_000, 5_200_000)
    b.on_episode(life(1000))                                  # a game still being played
    # 1M window = frames 4.2M-5.2M: one life, no game yet
    assert (b.life_reward_mean("1M"), b.evaluation_lives("1M")) == (1000, 1)
    assert (b.reward_mean("1M"), b.evaluation_games("1M")) == (None, 0)
    # 5M window = frames 0.2M-5.2M: lives 100, 300, 200, 600, 1000; games 400, 800
    assert (b.life_reward_mean("5M"), b.evaluation_lives("5M")) == (pytest.approx(440), 5)
    assert (b.reward_mean("5M"), b.evaluation_games("5M")) == (pytest.approx(600), 2)
    b.on_heartbeat(hb("w", 5_600_000))                         # 5M window = 0.6M-5.6M: game 1 is out
    assert (b.life_reward_mean("5M"), b.evaluation_lives("5M")) == (pytest.approx(600), 3)
    assert (b.reward_mean("5M"), b.evaluation_games("5M")) == (800, 1)
    assert (b.life_reward_mean("1M"), b.evaluation_lives("1M")) == (1000, 1)


def test_episode_reward_slope_is_per_20_episodes():
    b = Bookkeeper()
    for i in range(30):
        b.on_episode(ep(0, evaluation=False, reward=2.0 * i))
    assert b.episode_reward_slope() == pytest.approx(40.0)
    assert slope([1, 1], [0, 5]) == 0.0


def test_state_round_trip():
    b = Bookkeeper()
    b.on_heartbeat(hb("w", 1_234))
    b.on_episode(life(300))
    b.on_episode(ep(700))
    c = Bookkeeper()
    c.load_state_dict(b.state_dict())
    assert c.state_dict() == b.state_dict()
    assert c.evaluation_lives("1M") == 2 and c.life_reward_mean("1M") == 150


def test_state_from_before_per_life_figures_loads():
    b = Bookkeeper()
    b.on_episode(ep(700))
    old = {k: v for k, v in b.state_dict().items() if k != "eval_lives"}
    c = Bookkeeper()
    c.load_state_dict(old)
    assert c.reward_mean("5M") == 700 and c.evaluation_lives("5M") == 0 and c.life_reward_mean("5M") is None


def test_live_setting_changes_are_validated():
    s = load_live_settings({})
    assert apply_changes(s, {"lr": "0.0005", "use_soft_target": "false"}).use_soft_target is False
    for bad, fragment in (({"lr": "5"}, "lr=5 is out of range"), ({"gradient_accumulation_steps": 0}, "out of range"),
                          ({"nope": 1}, "unknown setting"), ({"lr_schedule": "linear"}, "lr_schedule=linear")):
        with pytest.raises(ConfigError, match=fragment):
            apply_changes(s, bad)
