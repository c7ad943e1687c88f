"""The worker's pure parts: the evaluation scheduler (a table of named cases), the actor chooser
and the transition adder on RAM recorded from the real game."""
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.emulator.actors import ActorChooser, EvaluationScheduler
from services.emulator.adder import TransitionAdder
from services.emulator.episodes import EpisodeTracker, RewardConfig
from services.emulator.metrics import WorkerMetrics
from services.emulator.network_policy import NetworkPolicy
from services.emulator.session import Tick, TickClassifier
from tempest_common.game_state import decode_ram
from tempest_common.messages import ACTOR_EVALUATION, ACTOR_NETWORK, ACTOR_RANDOM, TransitionBatch
from tempest_common.actions import NUM_ACTIONS
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


def test_the_first_draw_after_the_network_is_ready_is_an_evaluation():
    assert not chooser(ready=False).next_game_is_evaluation()
    c = chooser()
    c.follow_schedule(0.0, 0.0, 0.0, 0.0)   # evaluation share 0
    assert c.next_game_is_evaluation() and not any(c.next_game_is_evaluation() for _ in range(100))
    c.follow_schedule(0.0, 0.0, 0.3, 0.0)
    assert 0.2 < sum(c.next_game_is_evaluation() for _ in range(1000)) / 1000 < 0.4


def test_expert_without_a_client_falls_back():
    assert chooser(ratio=1.0).choose(None, lambda: 3) == (ACTOR_NETWORK, 3)


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
