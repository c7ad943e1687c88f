"""Imitation labels (EXPERT_LABELS): the actor chooser asks the real expert service, over real
ZeroMQ, for its choice on the ticks it did not play; labels travel with their rows through the
episode tracker and the adder into the TransitionBatch.  That the session's gate (which labels
pass through) is the one its actions pass through is checked on the real game
(tests/game/test_worker_game.py)."""
import dataclasses
import threading
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.emulator.actors import ActorChooser
from services.emulator.adder import TransitionAdder
from services.emulator.episodes import EpisodeTracker, RewardConfig
from services.emulator.metrics import WorkerMetrics
from services.emulator.network_policy import NetworkPolicy
from services.emulator.session import LONG_AGO, Tick, TickClassifier
from services.expert.client import ExpertClient
from services.expert.config import ExpertConfig
from services.expert.metrics import ExpertMetrics
from services.expert.policy import expert_actions
from services.expert.service import ExpertService
from tempest_common.actions import ACTIONS, NUM_ACTIONS, NUM_SPINNER, ZAP_USES_PER_LEVEL, gate_zap
from tempest_common.game_state import decode_ram
from tempest_common.messages import (ACTOR_EVALUATION, ACTOR_EXPERT, ACTOR_NETWORK, ACTOR_RANDOM, NO_ACTION,
                                     TransitionBatch)
from tempest_common.network import DuelingQNetwork
from tempest_common.state_vector import STATE_SIZE
from tempest_common.wire import decode, encode
from tests.conftest import free_port
from tests.unit.recorded import FIRST_LIVES, ZOOM

# decision ticks of recorded play (the first life, and a level's end with its zoom)
RAMS = np.concatenate([FIRST_LIVES[33:276], ZOOM[:56]])
TIMEOUT_MS = 5000   # generous: the CPUs are shared, and a late answer here would be a false failure


@pytest.fixture(scope="module")
def expert():
    """The real expert service on a loopback port (in a thread): (address, its metrics)."""
    addr, metrics = f"tcp://127.0.0.1:{free_port()}", ExpertMetrics(CollectorRegistry())
    service = ExpertService(ExpertConfig(bind=addr, metrics_port=0), metrics)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    yield addr, metrics
    service.stop()
    thread.join(5)


def chooser(addr, ratio=0.0, epsilon=0.0, labels=True, timeout_ms=TIMEOUT_MS, backoff_s=1.0, seed=0):
    metrics = WorkerMetrics(CollectorRegistry())
    network = NetworkPolicy("", metrics)
    network.net = DuelingQNetwork(STATE_SIZE, NUM_ACTIONS, (8,))
    client = ExpertClient(addr) if addr else None
    return ActorChooser(client, network, ratio, epsilon, timeout_ms, backoff_s, metrics, np.random.default_rng(seed),
                        labels=labels)


def play(c, rams, evaluation=False):
    """(actor, action, label) per tick, the way the worker asks: choose, (answer), label."""
    out = []
    for i, ram in enumerate(rams):
        state_fn = lambda ram=ram: decode_ram(ram[None])  # noqa: E731
        actor, action = c.choose(state_fn, lambda: (3 * i) % NUM_ACTIONS, evaluation)
        out.append((actor, action, c.label(actor, action, state_fn)))
    return out


def counted(c, result):
    return c.metrics.expert_labels.labels(result=result)._value.get()


def decided(service_metrics, at_least=0.0):
    """States the expert has decided, once the count settles (it counts after replying)."""
    deadline, last = time.monotonic() + 2.0, -1.0
    while time.monotonic() < deadline:
        now = service_metrics.decisions._value.get()
        if now == last and now >= at_least:
            return now
        last = now
        time.sleep(0.05)
    return last


def test_network_and_random_ticks_are_labelled_with_the_experts_choice(expert):
    c = chooser(expert[0], epsilon=0.5)
    rows = play(c, RAMS)
    assert {a for a, _, _ in rows} == {ACTOR_NETWORK, ACTOR_RANDOM}
    assert [label for _, _, label in rows] == expert_actions(decode_ram(RAMS)).tolist()
    assert counted(c, "labelled") == len(RAMS) and counted(c, "missing") == 0
    # evaluation games' rows are transitions too: labelled alike
    rows = play(c, RAMS[:40], evaluation=True)
    assert {a for a, _, _ in rows} == {ACTOR_EVALUATION}
    assert [label for _, _, label in rows] == expert_actions(decode_ram(RAMS[:40])).tolist()


def test_expert_rows_are_labelled_with_their_action_and_not_asked_twice(expert):
    addr, service_metrics = expert
    c = chooser(addr, ratio=0.5, epsilon=0.3, seed=3)
    before = decided(service_metrics)
    rows = play(c, RAMS)
    assert {a for a, _, _ in rows} == {ACTOR_EXPERT, ACTOR_NETWORK, ACTOR_RANDOM}
    assert all(label == action for actor, action, label in rows if actor == ACTOR_EXPERT)
    assert [label for _, _, label in rows] == expert_actions(decode_ram(RAMS)).tolist()
    assert decided(service_metrics, before + len(RAMS)) - before == len(RAMS)   # one expert call per tick


def test_labels_off_leave_only_the_experts_rows_labelled(expert):
    addr, service_metrics = expert
    c = chooser(addr, ratio=0.5, epsilon=0.3, labels=False, seed=3)
    before = decided(service_metrics)
    rows = play(c, RAMS)
    experts = sum(actor == ACTOR_EXPERT for actor, _, _ in rows)
    assert 0 < experts < len(rows)
    assert all(label == (action if actor == ACTOR_EXPERT else NO_ACTION) for actor, action, label in rows)
    assert decided(service_metrics, before + experts) - before == experts   # no calls for labels
    assert counted(c, "labelled") == experts and counted(c, "missing") == 0


def test_an_unavailable_expert_gives_no_label_and_starts_the_back_off():
    c = chooser("", epsilon=0.5)   # no expert configured
    assert {label for _, _, label in play(c, RAMS[:20])} == {NO_ACTION}
    assert counted(c, "missing") == 20
    # an expert that never answers: one timeout, then backing off (no more waiting) for a label,
    # and the expert's turns go to the network meanwhile, as after a missed expert turn
    c = chooser(f"tcp://127.0.0.1:{free_port()}", epsilon=0.5, timeout_ms=20, backoff_s=3600.0)
    t0 = time.monotonic()
    rows = play(c, RAMS[:50])
    assert time.monotonic() - t0 < 2.0, "waited on the expert while backing off"
    assert {label for _, _, label in rows} == {NO_ACTION}
    assert c.metrics.expert_timeouts._value.get() == 1 and time.monotonic() < c._expert_retry_at
    c.follow_schedule(1.0, 0.0, 0.0, 0.0)
    assert {actor for actor, _, _ in play(c, RAMS[:5])} == {ACTOR_NETWORK}


def test_a_label_is_gated_like_an_action(expert):
    c = chooser(expert[0])
    choice = expert_actions(decode_ram(RAMS))
    zaps = [i for i, a in enumerate(choice) if ACTIONS[a].zap]
    assert zaps, "recorded play where the expert superzaps"
    cooldown = lambda a: gate_zap(a, 0, 0)                        # noqa: E731  just zapped
    used_up = lambda a: gate_zap(a, ZAP_USES_PER_LEVEL, LONG_AGO)  # noqa: E731  none left this level
    allowed = lambda a: gate_zap(a, 0, LONG_AGO)                   # noqa: E731
    for i in zaps:
        state_fn = lambda: decode_ram(RAMS[i][None])  # noqa: E731
        for gate in (cooldown, used_up):   # the same action without the zap
            assert c.label(ACTOR_NETWORK, 0, state_fn, gate) == choice[i] - 2 * NUM_SPINNER
        assert c.label(ACTOR_RANDOM, 0, state_fn, allowed) == choice[i]
        # an expert turn's label is its action as the gate lets it play
        assert c.label(ACTOR_EXPERT, choice[i], None, used_up) == choice[i] - 2 * NUM_SPINNER
    assert counted(c, "labelled") == 4 * len(zaps)


def track(decisions_of, truncate=True):
    """Records of recorded play, each decision tick i given decisions_of(i)."""
    tracker, classifier, prev, records = EpisodeTracker(RewardConfig()), TickClassifier(), None, []
    for i, ram in enumerate(FIRST_LIVES):
        tick = Tick(classifier.classify(ram), ram, i)
        r, _ = tracker.observe(tick, prev, decisions_of(i) if tick.decides else None)
        prev = ram if tick.decides else None
        records += r
    if truncate:
        records += tracker.truncate()[0]
    return records


def test_labels_reach_the_batch_in_step_with_their_rows():
    # tick i: actor and label from i, so each row's label can be traced back to its tick
    actor_of = lambda i: (ACTOR_EXPERT, ACTOR_NETWORK, ACTOR_RANDOM)[i % 3]  # noqa: E731
    label_of = lambda i: NO_ACTION if i % 5 == 0 else (7 * i) % NUM_ACTIONS  # noqa: E731
    records = track(lambda i: (actor_of(i), i % NUM_ACTIONS, label_of(i)))
    adder = TransitionAdder("w:1", "w", batch_size=50)
    batches = [b for k in range(0, len(records), 7) if (b := adder.add(records[k:k + 7])) is not None]
    batches += [adder.flush()]
    batches = [decode(encode(b), expect=TransitionBatch) for b in batches]   # over the wire
    labels = np.concatenate([b.expert_action for b in batches])
    assert labels.dtype == np.int16 and len(labels) == len(records)
    # FIRST_LIVES decides on ticks 33-275 (death edge at 276) and 378 to its end (then truncated)
    ticks = list(range(33, 276)) + list(range(378, len(FIRST_LIVES)))
    assert [r.truncated for r in records] == [False] * (len(records) - 1) + [True]
    assert labels[:-1].tolist() == [label_of(i) for i in ticks[:-1]]
    assert labels[-1] == NO_ACTION   # the truncated, bootstrap-only row has no label
    assert np.concatenate([b.actor for b in batches])[:-1].tolist() == [actor_of(i) for i in ticks[:-1]]


def test_a_decision_without_a_label_is_labelled_as_the_batch_would_derive_it():
    records = track(lambda i: ((ACTOR_EXPERT, ACTOR_NETWORK)[i % 2], i % NUM_ACTIONS), truncate=False)
    assert records and all(r.expert_action == (r.action if r.actor == ACTOR_EXPERT else NO_ACTION)
                           for r in records)
    batch = TransitionAdder("w:1", "w", batch_size=1).add(records)
    derived = TransitionBatch(**{f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)
                                 if f.name != "expert_action"})
    assert np.array_equal(batch.expert_action, derived.expert_action)
