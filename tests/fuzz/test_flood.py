"""Fuzz: the real services, as separate processes, flooded with hostile input on every endpoint.

Redis, the replay, the expert and the learner run as in `make up` (free ports, 127.0.0.1).  Each
ZeroMQ endpoint they receive on gets FLOOD messages from `hostile.py` (seeded): random bytes,
mutated valid messages, wrong versions and kinds, lying arrays, and hostile-but-valid ones (values
at and past every bound, 1 MB ids, the largest requests, NaN everywhere a float goes), then a few
messages over the socket's size limit.  The flood runs once (the module fixture); the tests then
check, per service:
  - it still runs and answers a well-formed request;
  - its resident memory grew by less than RSS_BUDGET over the flood;
  - what it refused is counted by reason: for every reason the input was built to provoke, the
    counter grew by at least the number sent, and all its reject counters together by at least
    the number of messages that had to be refused;
  - an oversized message cut the sender's connection (counted) instead of being read;
  - its log stayed small (rejects are logged a few lines per reason, not one per message);
and that no control "set" went through (each had a bad token or a bad setting), and that the
replay never serves a non-finite row.  A failure names the counter, the reason and what was sent;
TEMPEST_FUZZ_SEED picks another (reproducible) flood.  The whole module takes about half a minute.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from services.expert.client import ExpertClient
from services.learner.control import ControlClient
from services.replay.client import ReplayClient
from tempest_common.actions import NUM_ACTIONS
from tempest_common.game_state import decode_ram
from tempest_common.wire import encode
from tests.conftest import scrape, wait_for
from tests.fuzz import hostile_services as HS
from tests.fuzz.flood import (ENDPOINT_SERVICE, FLOOD, LOG_BUDGET, RSS_BUDGET, SERVICES, STATE_DIM, Flood,
                              flood, shortfalls)  # noqa: F401  (flood: the module fixture)
from tests.unit.recorded import FIRST_LIVES

pytestmark = pytest.mark.integration


# -- the checks --------------------------------------------------------------------------------------
def alive(f: Flood, service: str) -> None:
    code = f.procs[service].poll()
    assert code is None, (f"the {service} service exited (status {code}) during the flood; "
                          f"its log: {f.logs[service]}")


@pytest.mark.parametrize("name", ["replay_pull", "replay_router", "expert", "learner_inbox", "learner_control"])
def test_every_endpoint_took_the_whole_flood(flood, name):
    sent = flood.sent[name]
    assert not sent.stalled, f"{name}: {sent.stalled}"
    assert sent.messages >= FLOOD, f"{name}: only {sent.messages} messages sent"


def test_replay_survives_and_samples(flood):
    alive(flood, "replay")
    client = ReplayClient(flood.urls["replay_router"], timeout_s=20)
    try:
        reply = client.sample(32, n_step=3, gamma=0.99, prioritized=True, beta=0.4, wait_s=5)
        assert reply.error is None and len(reply.action) == 32
        assert reply.state.shape == (32, STATE_DIM)
        assert np.all((reply.action >= 0) & (reply.action < NUM_ACTIONS))
        client.update_priorities(reply.index, np.full(32, 0.5, np.float32))
    finally:
        client.close()


def test_replay_serves_only_finite_rows(flood):
    """Hostile-but-valid rows (states of 1e6, rewards of 1e6) must not turn into inf or NaN on the
    way out: the replay stores float16 states by default, where 1e6 is inf."""
    alive(flood, "replay")
    client = ReplayClient(flood.urls["replay_router"], timeout_s=20)
    try:
        for _ in range(4):
            r = client.sample(16384, n_step=5, gamma=0.99, prioritized=False, beta=0.4, wait_s=5)
            bad = ~np.isfinite(r.state).all(axis=1) | ~np.isfinite(r.next_state).all(axis=1) \
                | ~np.isfinite(r.reward) | ~np.isfinite(r.weight)
            assert not bad.any(), (f"{int(bad.sum())} of {len(bad)} sampled rows hold inf/NaN (e.g. state "
                                   f"{r.state[bad][0][:4]}, reward {r.reward[bad][0]})")
    finally:
        client.close()


def test_expert_survives_and_answers(flood):
    alive(flood, "expert")
    client = ExpertClient(flood.urls["expert"])
    try:
        states = decode_ram(FIRST_LIVES[100:132])
        actions = None
        deadline = time.monotonic() + 20
        while actions is None and time.monotonic() < deadline:
            actions = client.act(states, timeout_ms=2000)
        assert actions is not None and actions.shape == (32,)
        assert np.all((actions >= 0) & (actions < NUM_ACTIONS))
    finally:
        client.close()


def live_settings(flood) -> dict:
    """The learner's settings through its control endpoint (a well-formed "get")."""
    control = ControlClient(flood.urls["learner_control"], token=flood.token, timeout_s=20)
    try:
        return control.get()
    finally:
        control.close()


def test_learner_survives_answers_control_and_counts_heartbeats(flood):
    alive(flood, "learner")
    settings = live_settings(flood)
    assert settings, "no settings from the control endpoint"
    frames = scrape(flood.metrics["learner"])["tempest_learner_global_frames"]
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect(flood.urls["learner_inbox"])
    try:
        push.send(encode(HS.heartbeat("fuzz-after", 1000)))
        wait_for(lambda: scrape(flood.metrics["learner"])["tempest_learner_global_frames"] >= frames + 1000, 20,
                 what=f"tempest_learner_global_frames to grow by 1000 from {frames:g}")
    finally:
        push.close()
        ctx.term()


def test_no_control_set_went_through(flood):
    """Every "set" of the flood lacked the token or carried a bad setting: nothing may change."""
    alive(flood, "learner")
    now = live_settings(flood)
    same = lambda a, b: a == b or (a != a and b != b)  # noqa: E731  (NaN before and after: unchanged)
    changed = {k: (flood.settings_before.get(k), v) for k, v in now.items()
               if k not in flood.settings_before or not same(flood.settings_before[k], v)}
    assert not changed, f"settings changed by the flood (before, after): {changed}"


@pytest.mark.parametrize("service", SERVICES)
def test_memory_stays_bounded(flood, service):
    alive(flood, service)
    grew = flood.rss_after[service] - flood.rss_before[service]
    assert grew < RSS_BUDGET, (f"the {service} service's resident memory grew by {grew / 2**20:.0f} MiB over the "
                               f"flood (from {flood.rss_before[service] / 2**20:.0f} MiB)")


@pytest.mark.parametrize("service", SERVICES)
def test_every_reject_is_counted_by_reason(flood, service):
    missing = shortfalls(flood, service, flood.after)
    sent = {n: dict(s.categories) for n, s in flood.sent.items() if ENDPOINT_SERVICE[n] == service}
    assert not missing, f"the {service} service's counters miss: " + "; ".join(missing) + f" (sent: {sent})"


@pytest.mark.parametrize("name", ["replay_pull", "replay_router", "expert", "learner_inbox", "learner_control"])
def test_oversized_messages_cut_the_connection(flood, name):
    service = ENDPOINT_SERVICE[name]
    alive(flood, service)
    r = flood.oversized[name]
    assert not r["error"], f"{name}: {r['error']}"
    assert r["cut"] == r["sent"], (f"{name}: {r['sent'] - r['cut']} of {r['sent']} messages over the size limit "
                                   "did not cut the connection (read instead?)")
    assert r["answered"] == 0, f"{name}: a message over the size limit was answered"


@pytest.mark.parametrize("service", SERVICES)
def test_logs_stay_small(flood, service):
    size = flood.logs[service].stat().st_size
    assert size < LOG_BUDGET, f"the {service} service logged {size / 2**20:.1f} MiB over the flood ({flood.logs[service]})"
