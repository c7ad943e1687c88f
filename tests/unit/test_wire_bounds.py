"""Messages that decode cleanly but lie are refused at decode (MessageError "bad_field"), before any
service stores or counts them: each case here once got through and did damage downstream (issue 14)."""
from dataclasses import replace

import numpy as np
import pytest

from tempest_common import messages as m
from tempest_common.actions import NUM_ACTIONS
from tempest_common.wire import MessageError, decode, encode
from tests.unit.wire_examples import examples

EX = examples()


def wire(msg) -> bytes:
    """Encode without the sender's checks, as a hostile peer would (the same msgpack map)."""
    import msgpack

    from tempest_common.wire import _CODECS, _field_specs, SCHEMA_VERSION
    out = {"v": SCHEMA_VERSION, "kind": msg.KIND}
    for name, meta in _field_specs(type(msg)):
        out[name] = _CODECS[meta["wire"]][0](getattr(msg, name), name)
    return msgpack.packb(out, use_bin_type=True)


def transitions(**rows):
    t = EX["transitions"]
    return replace(t, **{k: np.asarray(v, getattr(t, k).dtype) for k, v in rows.items()})


REFUSED = {
    # the learner's q.gather raised on this action and crash-looped (the row sat at max priority)
    "action_past_the_last": transitions(action=[NUM_ACTIONS, 0]),
    "action_30000": transitions(action=[30000, 0]),
    # an expert label indexes Q in the learner's imitation loss as the action does in its TD loss
    "expert_label_past_the_last": transitions(expert_action=[NUM_ACTIONS, -1]),
    "expert_label_minus_2": transitions(expert_action=[-2, -1]),
    "reward_overflowing_an_n_step_sum": transitions(reward_game=[3e38, 0.0]),
    "reward_nan": transitions(reward_shaping=[np.nan, 0.0]),
    "negative_step": transitions(step=[-5, 0]),
    # the replay keeps first_row per stream and counts rows from it (issue 15): a bounded count
    "first_row_minus_2": replace(EX["transitions"], first_row=-2),
    "first_row_2_53_plus_1": replace(EX["transitions"], first_row=2 ** 53 + 1),
    "first_row_2_64": replace(EX["transitions"], first_row=2 ** 64 - 1),
    # frames_total = 2**64 - 1 pushed the learner's global frames past 64 bits: publish() raised
    "heartbeat_2_64": replace(EX["heartbeat"], frames_total=2 ** 64 - 1),
    "heartbeat_2_53_plus_1": replace(EX["heartbeat"], frames_total=2 ** 53 + 1),
    "heartbeat_inf_fps": replace(EX["heartbeat"], frames_per_s=float("inf")),
    # reward settings (schema 3) bound the learner's Q: outside what a worker can be configured
    # with, or only some of them unknown, they lie
    "heartbeat_reward_scale_2": replace(EX["heartbeat"], reward_scale=2.0),
    "heartbeat_reward_scale_negative": replace(EX["heartbeat"], reward_scale=-0.01),
    "heartbeat_reward_clip_inf": replace(EX["heartbeat"], reward_clip=float("inf")),
    "heartbeat_reward_clip_1e7": replace(EX["heartbeat"], reward_clip=1e7),
    "heartbeat_death_penalty_negative": replace(EX["heartbeat"], death_penalty=-5.0),
    "heartbeat_death_penalty_1e300": replace(EX["heartbeat"], death_penalty=1e300),
    "heartbeat_survival_bonus_11": replace(EX["heartbeat"], survival_bonus=11.0),
    "heartbeat_survival_bonus_minus_inf": replace(EX["heartbeat"], survival_bonus=float("-inf")),
    "heartbeat_reward_one_nan": replace(EX["heartbeat"], death_penalty=float("nan")),
    "heartbeat_reward_three_nan": replace(EX["heartbeat"], reward_scale=float("nan"), reward_clip=float("nan"),
                                          survival_bonus=float("nan")),
    "episode_score_2_63": replace(EX["episode"], score=2 ** 63 - 1),
    "episode_level_1000": replace(EX["episode"], level=1000),
    "episode_nan_reward": replace(EX["episode"], game_reward=float("nan")),
    "episode_actor_count_2_64": replace(EX["episode"], actor_counts={"expert": 2 ** 64 - 1}),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_decode_refuses_messages_that_lie(name):
    msg = REFUSED[name]
    with pytest.raises(MessageError) as err:
        decode(wire(msg))
    assert err.value.reason == "bad_field"
    with pytest.raises(MessageError):   # and the sender's side refuses to send it
        encode(msg)


def test_too_many_rows_are_refused():
    n = m.MAX_BATCH_ROWS + 1
    t = EX["transitions"]
    big = m.TransitionBatch(t.stream_id, t.worker_id, np.zeros(n, np.int64), np.zeros(n, np.int32),
                            np.zeros(n, np.uint8), np.zeros(n, np.int16), np.zeros(n, np.float32),
                            np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool),
                            np.zeros((n, 1), np.float16))
    with pytest.raises(MessageError, match="rows"):
        decode(wire(big))


@pytest.mark.parametrize("kind", ["transitions", "heartbeat", "episode"])
def test_the_honest_examples_still_pass(kind):
    decode(wire(EX[kind]))


def test_the_edges_that_are_legitimate_still_pass():
    decode(wire(transitions(action=[NUM_ACTIONS - 1, -1], truncated=[False, True], terminal=[False, False])))
    decode(wire(replace(EX["heartbeat"], frames_total=2 ** 53)))
    for first_row in (-1, 0, 2 ** 53):   # not numbered, a stream's first row, the largest count
        assert decode(wire(replace(EX["transitions"], first_row=first_row))).first_row == first_row
    decode(wire(replace(EX["episode"], score=m.MAX_SCORE, game_score=m.MAX_SCORE)))
    for name, (lo, hi) in m.REWARD_SETTING_RANGES.items():   # each reward setting at both ends of its range
        for edge in (lo, hi):
            assert getattr(decode(wire(replace(EX["heartbeat"], **{name: edge}))), name) == edge
    nan = float("nan")   # all four unknown: a worker that does not say (what schema 2 means)
    assert not decode(wire(replace(EX["heartbeat"], reward_scale=nan, reward_clip=nan, death_penalty=nan,
                                   survival_bonus=nan))).rewards_known


def test_reward_setting_ranges_are_the_emulator_config_ranges():
    """A worker can send every reward setting its config allows, and nothing else."""
    from dataclasses import fields

    from services.emulator.config import EmulatorConfig
    specs = {f.name: f.metadata["setting"] for f in fields(EmulatorConfig)}
    for name, (lo, hi) in m.REWARD_SETTING_RANGES.items():
        assert (specs[name]["min"], specs[name]["max"]) == (lo, hi), name


@pytest.mark.parametrize("msg", [
    replace(EX["transitions"], stream_id="s" * 100_000),
    replace(EX["heartbeat"], worker_id="w" * (m.MAX_NAME_CHARS + 1)),
    replace(EX["episode"], actor_counts={f"a{i}": 1 for i in range(m.MAX_DICT_ITEMS + 1)}),
    replace(EX["control_request"], settings={"lr_schedule": "x" * 1000}),
    replace(EX["ack"], error="e" * (m.MAX_TEXT_CHARS + 1)),
], ids=["stream_id_100k", "worker_id_257", "actor_counts_257", "setting_value_1000", "error_4097"])
def test_names_and_maps_a_service_keeps_have_a_bounded_size(msg):
    """A flood of 100,000-character made-up stream ids once grew the replay by hundreds of MB."""
    with pytest.raises(MessageError, match="at most"):
        decode(wire(msg))
