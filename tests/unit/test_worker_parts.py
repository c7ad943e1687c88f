"""The worker's pure parts: the evaluation scheduler and the actor schedule (tables of named
cases), the actor chooser and the transition adder on RAM recorded from the real game."""
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.emulator.actors import ActorChooser, ActorSchedule, EvaluationScheduler
from services.emulator.adder import TransitionAdder
from services.emulator.episodes import EpisodeTracker, RewardConfig
from services.emulator.metrics import WorkerMetrics
from services.emulator.network_policy import NetworkPolicy
from services.emulator.session import Tick, TickClassifier
from tempest_common.game_state import decode_ram
from tempest_common.messages import (ACTOR_EVALUATION, ACTOR_EXPERT, ACTOR_NETWORK, ACTOR_RANDOM,
                                     TransitionBatch)
from tempest_common.actions import ACTIONS, NUM_ACTIONS
from tempest_common.network import DuelingQNetwork
from tempest_common.state_vector import STATE_SIZE, encode_state
from tempest_common.wire import decode, encode
from tests.unit.recorded import FIRST_LIVES, ZOOM

S = EvaluationScheduler
# name: (events, expected phase after each); events are method calls on the scheduler
SCHEDULE_CASES = {
    # name: (events, expected phase after each); events are method calls on the scheduler
    "a life that draws no evaluation keeps training": ([("life_ended", False, False)], [S.TRAINING]),
    "drawn at a death with lives left, loaded, evaluated until its game over": (
        [("life_ended", False, True), ("load_sent",), ("game_loaded",), ("life_ended", False, False),
         ("life_ended", True, False)],
        [S.DUE, S.LOADING, S.EVALUATING, S.EVALUATING, S.TRAINING]),
    "an evaluation game's lives draw nothing until its game over": (
        [("life_ended", True, True), ("load_sent",), ("game_loaded",), ("life_ended", False, True)],
        [S.DUE, S.LOADING, S.EVALUATING, S.EVALUATING]),
    "two evaluation games in a row": (
        [("life_ended", True, True), ("load_sent",), ("game_loaded",), ("life_ended", True, True)],
        [S.DUE, S.LOADING, S.EVALUATING, S.DUE]),
    "a lost MAME cancels a due evaluation": ([("life_ended", False, True), ("mame_lost",)], [S.DUE, S.TRAINING]),
    "a lost MAME ends an evaluation game": (
        [("life_ended", True, True), ("load_sent",), ("game_loaded",), ("mame_lost",)],
        [S.DUE, S.LOADING, S.EVALUATING, S.TRAINING]),
}


@pytest.mark.parametrize("name", SCHEDULE_CASES)
def test_evaluation_schedule(name):
    events, phases = SCHEDULE_CASES[name]
    s = EvaluationScheduler()
    seen = []
    for method, *args in events:
        getattr(s, method)(*args)
        seen.append(s.phase)
    assert seen == phases
    assert s.evaluating == (phases[-1] == S.EVALUATING)


@pytest.mark.parametrize("phase,between_lives,has_start,expected", [
    (S.DUE, True, True, True),
    (S.DUE, False, True, False),     # never in the middle of a life
    (S.DUE, True, False, False),     # nothing saved to load yet
    (S.TRAINING, True, True, False),
    (S.LOADING, True, True, False),  # sent once until MAME confirms
])
def test_should_load(phase, between_lives, has_start, expected):
    s = EvaluationScheduler()
    s.phase = phase
    assert s.should_load(between_lives, has_start) is expected


def chooser(ratio=0.0, epsilon=0.0, ready=True, seed=0):
    metrics = WorkerMetrics(CollectorRegistry())
    network = NetworkPolicy("", metrics)
    network.net = DuelingQNetwork(STATE_SIZE, NUM_ACTIONS, (8,)) if ready else None
    return ActorChooser(None, network, ratio, epsilon, 50, 1, metrics, np.random.default_rng(seed))


def test_actor_choice_by_schedule():
    assert chooser(ready=False).choose(None, lambda: 7)[0] == ACTOR_RANDOM   # no weights yet
    assert chooser().choose(None, lambda: 7) == (ACTOR_NETWORK, 7)
    assert chooser(epsilon=1.0).choose(None, lambda: 7)[0] == ACTOR_RANDOM
    c = chooser(epsilon=1.0)
    c.follow_schedule(0.0, 1.0, 0.0, 0.0)
    assert c.choose(None, lambda: 7, evaluation=True) == (ACTOR_EVALUATION, 7)   # evaluation epsilon 0
    shares = [chooser(epsilon=0.3, seed=s).choose(None, lambda: 7)[0] for s in range(400)]
    assert 0.2 < shares.count(ACTOR_RANDOM) / 400 < 0.4


def test_random_ticks_press_no_zap_unless_random_zap():
    c = chooser(epsilon=1.0)
    played = [c.choose(None, lambda: 7) for _ in range(5000)]
    assert {actor for actor, _ in played} == {ACTOR_RANDOM}
    assert not any(ACTIONS[a].zap for _, a in played)
    c.follow_schedule(0.0, 0.0, 0.0, 1.0)   # evaluation games' random ticks too
    assert not any(ACTIONS[c.choose(None, lambda: 7, evaluation=True)[1]].zap for _ in range(5000))
    c.random_zap, c._k = True, 4096   # RANDOM_ZAP=1: the next block of draws may zap
    assert any(ACTIONS[c.choose(None, lambda: 7, evaluation=True)[1]].zap for _ in range(2000))


def test_the_first_draw_after_the_network_is_ready_is_an_evaluation():
    assert not chooser(ready=False).next_game_is_evaluation()
    c = chooser()
    c.follow_schedule(0.0, 0.0, 0.0, 0.0)   # evaluation share 0
    assert c.next_game_is_evaluation() and not any(c.next_game_is_evaluation() for _ in range(100))
    c.follow_schedule(0.0, 0.0, 0.3, 0.0)
    assert 0.2 < sum(c.next_game_is_evaluation() for _ in range(1000)) / 1000 < 0.4


def test_expert_without_a_client_falls_back():
    assert chooser(ratio=1.0).choose(None, lambda: 3) == (ACTOR_NETWORK, 3)


E, L = ActorSchedule.EXPERT, ActorSchedule.LEARNER
LIFE = ("life",)
# name: (mode, segment_ticks, events, expected who per tick); an event is LIFE (a life starts) or
# (u, expert_ratio), one decision tick with its uniform draw and the ratio in force
ACTOR_SCHEDULE_CASES = {
    "tick: a fresh draw every tick": ("tick", 200, [LIFE, (0.1, 0.5), (0.9, 0.5), (0.2, 0.5), (0.6, 0.5)],
                                      [E, L, E, L]),
    "tick: a changed ratio applies at once (every tick is a draw)": ("tick", 200, [(0.3, 0.5), (0.3, 0.2)], [E, L]),
    "tick: a life start changes nothing": ("tick", 200, [(0.1, 0.5), LIFE, (0.9, 0.5)], [E, L]),
    "life: the first tick of a worker draws": ("life", 200, [(0.9, 0.5), (0.1, 0.5)], [L, L]),
    "life: one draw holds the whole life": ("life", 200, [LIFE, (0.1, 0.5), (0.9, 0.5), (0.99, 0.5), (0.7, 0.5)],
                                            [E, E, E, E]),
    "life: the next life draws afresh": ("life", 200, [LIFE, (0.1, 0.5), (0.9, 0.5), LIFE, (0.9, 0.5), (0.1, 0.5)],
                                         [E, E, L, L]),
    "life: a changed ratio applies at the next life's draw only": (
        "life", 200, [LIFE, (0.3, 0.5), (0.3, 0.0), (0.3, 0.0), LIFE, (0.3, 0.0), LIFE, (0.3, 1.0)],
        [E, E, E, L, E]),
    "life: a life start before its first tick is one draw": ("life", 200, [LIFE, LIFE, (0.9, 0.5), (0.1, 0.5)],
                                                             [L, L]),
    "segment: redraws every N ticks": (
        "segment", 3, [LIFE, (0.1, 0.5), (0.9, 0.5), (0.9, 0.5), (0.9, 0.5), (0.1, 0.5), (0.1, 0.5), (0.1, 0.5)],
        [E, E, E, L, L, L, E]),
    "segment: a life start redraws and restarts the count": (
        "segment", 3, [LIFE, (0.1, 0.5), (0.9, 0.5), LIFE, (0.9, 0.5), (0.1, 0.5), (0.1, 0.5), (0.1, 0.5)],
        [E, E, L, L, L, E]),
    "segment: a changed ratio applies at the next segment's draw only": (
        "segment", 2, [LIFE, (0.4, 0.5), (0.4, 0.1), (0.4, 0.1), (0.4, 0.1)], [E, E, L, L]),
    "segment of one tick is tick mode": ("segment", 1, [LIFE, (0.1, 0.5), (0.9, 0.5), (0.2, 0.5)], [E, L, E]),
}


@pytest.mark.parametrize("name", ACTOR_SCHEDULE_CASES)
def test_actor_schedule(name):
    mode, segment_ticks, events, expected = ACTOR_SCHEDULE_CASES[name]
    s = ActorSchedule(mode, segment_ticks)
    seen = []
    for event in events:
        if event == LIFE:
            s.life_started()
        else:
            seen.append(s.who(*event))
    assert seen == expected


@pytest.mark.parametrize("mode,segment_ticks", [("sometimes", 200), ("segment", 0)])
def test_actor_schedule_rejects_bad_settings(mode, segment_ticks):
    with pytest.raises(ValueError):
        ActorSchedule(mode, segment_ticks)


class CountingExpert:
    """Answers action n % 44 on its n-th call, except every 7th call (a timeout)."""
    def __init__(self):
        self.n = 0

    def act(self, batch, timeout_ms):
        self.n += 1
        return None if self.n % 7 == 0 else np.array([self.n % NUM_ACTIONS])


def reference_choices(seed, ticks, ratio, epsilon, ratio_later, epsilon_later):
    """ActorChooser.choose before ActorSchedule existed (a per-tick draw), copied: the RNG stream
    and every (actor, action) a seed gives must stay exactly these in mode "tick" (random actions
    among the 22 without the zap since issue 24)."""
    rng, expert, out = np.random.default_rng(seed), CountingExpert(), []
    no_zap = [i for i in range(NUM_ACTIONS) if not ACTIONS[i].zap]
    draw = lambda: np.asarray(no_zap)[rng.integers(0, len(no_zap), 4096)]   # noqa: E731
    uniform, actions = rng.random((4096, 2)), draw()
    for t in range(ticks):
        if t == ticks // 2:
            ratio, epsilon = ratio_later, epsilon_later
        k = t % 4096
        if k == 0 and t:
            uniform, actions = rng.random((4096, 2)), draw()
        u_actor, u_eps, random_action = uniform[k][0], uniform[k][1], int(actions[k])
        if u_actor < ratio:   # backoff 0 s: the expert is asked again on the next tick
            reply = expert.act(None, 50)
            if reply is not None:
                out.append((ACTOR_EXPERT, int(reply[0])))
                continue
        out.append((ACTOR_NETWORK, 43 - t % 44) if u_eps >= epsilon else (ACTOR_RANDOM, random_action))
    return out


def chooser_choices(c, ticks, ratio_later, epsilon_later, lives_every=None):
    out = []
    for t in range(ticks):
        if t == ticks // 2:
            c.follow_schedule(ratio_later, epsilon_later, 0.0, 0.0)
        if lives_every and t % lives_every == 0:
            c.life_started()
        out.append(c.choose(lambda: None, lambda: 43 - t % 44))
    return out


def expert_chooser(ratio, epsilon, seed, schedule=None):
    c = chooser(ratio, epsilon, seed=seed)
    c.expert, c.expert_backoff_s = CountingExpert(), 0.0
    if schedule is not None:
        c.schedule = schedule
    return c


@pytest.mark.parametrize("seed", [0, 123])
def test_tick_mode_plays_exactly_as_before(seed):
    ticks = 9000   # more than one block of pre-drawn uniforms
    expected = reference_choices(seed, ticks, 0.6, 0.2, 0.3, 0.5)
    assert chooser_choices(expert_chooser(0.6, 0.2, seed), ticks, 0.3, 0.5) == expected
    # the default schedule is "tick", and life starts do not change it
    assert chooser_choices(expert_chooser(0.6, 0.2, seed, ActorSchedule("tick")), ticks, 0.3, 0.5,
                           lives_every=50) == expected
    assert {actor for actor, _ in expected} == {ACTOR_EXPERT, ACTOR_NETWORK, ACTOR_RANDOM}


def test_life_mode_holds_the_actor_for_a_life_and_falls_back_when_the_expert_is_away():
    c = expert_chooser(0.5, 0.2, 7, ActorSchedule("life"))
    lives = []
    for _ in range(40):
        c.life_started()
        lives.append([c.choose(lambda: None, lambda: 9)[0] for _ in range(30)])
    expert_lives = [life for life in lives if ACTOR_EXPERT in life]
    learner_lives = [life for life in lives if ACTOR_EXPERT not in life]
    assert expert_lives and learner_lives
    assert all(set(life) <= {ACTOR_NETWORK, ACTOR_RANDOM} for life in learner_lives)
    # on an expert life the expert plays every tick it answers; its timeouts (every 7th call)
    # fall back to the learner's epsilon-greedy choice for that tick
    assert all(life.count(ACTOR_EXPERT) >= 25 for life in expert_lives)
    c = expert_chooser(1.0, 0.0, 7, ActorSchedule("life"))
    c.expert_backoff_s = 3600.0
    c.life_started()
    actors = [c.choose(lambda: None, lambda: 9)[0] for _ in range(20)]
    assert actors[:6] == [ACTOR_EXPERT] * 6 and set(actors[6:]) == {ACTOR_NETWORK}   # backing off
    assert time.monotonic() < c._expert_retry_at


def test_evaluation_games_ignore_the_actor_schedule():
    c = expert_chooser(1.0, 0.0, 7, ActorSchedule("life"))
    c.life_started()
    assert [c.choose(lambda: None, lambda: 9, evaluation=True) for _ in range(5)] == [(ACTOR_EVALUATION, 9)] * 5
    assert c.expert.n == 0 and c.schedule.current is None   # no draw was spent on the evaluation game


def records_of(ticks):
    tracker, classifier, prev, records = EpisodeTracker(RewardConfig()), TickClassifier(), None, []
    for i, ram in enumerate(ticks):
        tick = Tick(classifier.classify(ram), ram, i)
        r, _ = tracker.observe(tick, prev, (ACTOR_RANDOM, i % 44) if tick.decides else None)
        prev = ram if tick.decides else None
        records += r
    return records


def test_adder_batches_encode_each_record_with_its_previous_tick():
    records = records_of(ZOOM)
    adder = TransitionAdder("w:1", "w", batch_size=16, state_dtype="float32")
    batches = [b for i in range(0, len(records), 5) if (b := adder.add(records[i:i + 5])) is not None]
    rest = adder.flush()
    assert adder.flush() is None
    batches += [rest] if rest is not None else []
    assert all(len(b.step) >= 16 for b in batches[:-1])
    rows = [i for b in batches for i in range(len(b.step))]
    assert len(rows) == len(records)
    state = np.concatenate([b.state for b in batches])
    for k, r in enumerate(records):
        prev = None if r.prev_ram is None else decode_ram(r.prev_ram)
        assert np.array_equal(state[k], encode_state(decode_ram(r.ram), prev))
    assert list(np.concatenate([b.action for b in batches])) == [r.action for r in records]
    assert list(np.concatenate([b.terminal for b in batches])) == [r.terminal for r in records]


def test_adder_batch_travels_the_wire_as_float16():
    records = records_of(FIRST_LIVES[:300])
    batch = TransitionAdder("w:1", "w", batch_size=1000).add(records) or None
    assert batch is None  # fewer than a batch: waits
    batch = TransitionAdder("w:1", "w", batch_size=10).add(records)
    again = decode(encode(batch), expect=TransitionBatch)
    assert again.state.dtype == np.float16 and again.terminal[-1] and len(again.step) == len(records)
    assert list(again.episode_id) == [0] * len(records)
