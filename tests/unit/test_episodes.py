"""EpisodeTracker on recorded ticks: a table of named cases, plus the reward function."""
import numpy as np
import pytest

from services.emulator.episodes import EpisodeTracker, RewardConfig, game_reward
from services.emulator.session import Tick, TickClassifier
from tempest_common.game_state import decode_ram
from tests.unit.recorded import FIRST_LIVES, GAME_OVER, ZOOM

REWARD = RewardConfig(scale=0.01, clip=10.0, death_penalty=5.0, survival_bonus=0.1)


def run(ticks, truncate_at_end=False, actor=2):
    tracker, classifier = EpisodeTracker(REWARD), TickClassifier()
    states = decode_ram(ticks)
    records, ends, prev = [], [], None
    for i in range(len(ticks)):
        tick = Tick(classifier.classify(ticks[i]), ticks[i], i)
        r, e = tracker.observe(tick, prev, (actor, i % 44) if tick.decides else None)
        prev = ticks[i] if tick.decides else None
        records += r
        ends += e
    if truncate_at_end:
        r, e = tracker.truncate()
        records += r
        ends += e
    return records, ends, states


def play_alive(states):
    return np.asarray(states.in_play) & np.asarray(states.player_alive)


CASES = {
    # name: (ticks, truncate, expected ends, expected records)
    "first life ends on the death edge": (FIRST_LIVES[:300], False, ["terminal"], 276 - 33),
    "skipped ticks before play make no records": (FIRST_LIVES[:33], False, [], 0),
    "truncation leaves a bootstrap-only last record": (FIRST_LIVES[:200], True, ["truncated"], 200 - 33),
    "zoom ticks are records, between-level states are not": (ZOOM, True, ["truncated"], None),
    "last life then a new game": (GAME_OVER, True, ["terminal", "truncated"], None),
}


@pytest.mark.parametrize("name", CASES)
def test_named_case(name):
    ticks, truncate, expected_ends, expected_records = CASES[name]
    records, ends, states = run(ticks, truncate)
    assert [e.end for e in ends] == expected_ends
    if expected_records is not None:
        assert len(records) == expected_records
    for e in ends:
        mine = [r for r in records if r.episode_id == e.episode_id]
        assert [r.step for r in mine] == list(range(len(mine)))
        assert e.length == sum(1 for r in mine if not r.truncated)
        assert np.isclose(e.game_reward, sum(r.reward_game for r in mine), atol=1e-6)
        if e.end == "terminal":
            assert mine[-1].terminal and not any(r.terminal for r in mine[:-1])
        else:
            assert mine[-1].truncated and mine[-1].action == -1 and not any(r.terminal for r in mine)
    # records only from play/zoom ticks with the player alive
    assert len(records) <= int(play_alive(states).sum())


def test_first_life_rewards_and_score():
    records, ends, states = run(FIRST_LIVES[:300])
    (end,) = ends
    assert end.score == 450 and end.game_score == 450 and not end.game_over
    assert end.actor_counts == {"random": 276 - 33}
    # 450 points at 0.01 per point, then the death penalty on the last record
    assert np.isclose(sum(r.reward_game for r in records), 4.5 - 5.0)
    last_delta = int(states.score[276]) - int(states.score[275])
    assert np.isclose(records[-1].reward_game, last_delta * 0.01 - 5.0)
    assert records[-1].reward_shaping == 0.0 and np.isclose(records[0].reward_shaping, 0.1)
    # actions are the ones given for each tick (i % 44 at tick 33 + step)
    assert [r.action for r in records[:3]] == [33 % 44, 34 % 44, 35 % 44]


def test_zoom_ticks_are_recorded_with_their_previous_tick():
    records, _, _ = run(ZOOM, truncate_at_end=True)
    modes = [int(r.ram[0]) for r in records]
    assert 0x20 in modes and 0x04 in modes
    assert records[0].prev_ram is None
    assert all(np.array_equal(b.prev_ram, a.ram) for a, b in zip(records, records[1:]) if b.prev_ram is not None)
    after_zoom = [b for a, b in zip(records, records[1:]) if a.ram[0] == 0x20 and b.ram[0] == 0x04]
    assert after_zoom and after_zoom[0].prev_ram is None, "between-level ticks reset the velocities"


def test_a_decision_tick_needs_a_decision():
    tracker = EpisodeTracker(REWARD)
    with pytest.raises(ValueError, match="START tick needs a decision"):
        tracker.observe(Tick(TickClassifier().classify(FIRST_LIVES[33]), FIRST_LIVES[33], 0), None, None)


def test_game_over_and_new_game():
    _, ends, _ = run(GAME_OVER, truncate_at_end=True)
    assert ends[0].game_over and ends[0].game_score == 5574
    assert ends[1].game_id == ends[0].game_id + 1 and ends[1].game_score == 0


@pytest.mark.parametrize("delta,died,expected", [
    (150, False, 1.5), (0, True, -5.0), (5000, False, 10.0), (250, True, -2.5), (-100, False, -1.0)])
def test_game_reward(delta, died, expected):
    assert np.isclose(game_reward(delta, died, REWARD), expected)
