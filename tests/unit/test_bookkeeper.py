"""The learner's bookkeeping: global frames, schedule floor, performance windows and slopes."""
import numpy as np
import pytest

from services.learner.bookkeeper import Bookkeeper, expert_ratio, slope
from services.learner.settings import apply_changes, load_live_settings
from tempest_common.config import ConfigError
from tempest_common.messages import EpisodeSummary, Heartbeat


def hb(worker, frames):
    return Heartbeat(worker, frames, 0, 600.0, 270.0, 0.0)


def ep(score, evaluation=True, game_over=True, reward=1.0):
    return EpisodeSummary("s", "w", 0, 0, evaluation, 10, reward, 0.0, 0, score, 0, "terminal", game_over, {}, 0.0)


def test_global_frames_add_per_worker_increases_and_survive_restarts():
    b = Bookkeeper()
    b.on_heartbeat(hb("a", 100))
    b.on_heartbeat(hb("b", 50))
    b.on_heartbeat(hb("a", 250))
    b.on_heartbeat(hb("a", 30))   # worker a restarted: its counter began again
    assert b.global_frames == 250 + 50 + 30


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


def test_episode_reward_slope_is_per_20_episodes():
    b = Bookkeeper()
    for i in range(30):
        b.on_episode(ep(0, evaluation=False, reward=2.0 * i))
    assert b.episode_reward_slope() == pytest.approx(40.0)
    assert slope([1, 1], [0, 5]) == 0.0


def test_state_round_trip():
    b = Bookkeeper()
    b.on_heartbeat(hb("w", 1_234))
    b.on_episode(ep(700))
    c = Bookkeeper()
    c.load_state_dict(b.state_dict())
    assert c.state_dict() == b.state_dict()


def test_live_setting_changes_are_validated():
    s = load_live_settings({})
    assert apply_changes(s, {"lr": "0.0005", "use_soft_target": "false"}).use_soft_target is False
    for bad, fragment in (({"lr": "5"}, "lr=5 is out of range"), ({"gradient_accumulation_steps": 0}, "out of range"),
                          ({"nope": 1}, "unknown setting"), ({"lr_schedule": "linear"}, "lr_schedule=linear")):
        with pytest.raises(ConfigError, match=fragment):
            apply_changes(s, bad)
