"""Wire format: golden bytes for every message kind, round trips, and rejection of bad input
(every rejection must be a MessageError with a metrics-friendly reason, never a crash)."""
from __future__ import annotations

import dataclasses
import pathlib

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tempest_common import messages as m
from tempest_common.wire import REASONS, SCHEMA_VERSION, UPGRADES, MessageError, decode, encode
from tests.unit.wire_examples import assert_same, examples

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "data" / "golden"
EXAMPLES = examples()


def _raw(msg) -> dict:
    """The decoded msgpack map of a message, to tamper with."""
    return msgpack.unpackb(encode(msg), raw=False)


def _reason(data, **kw) -> str:
    with pytest.raises(MessageError) as e:
        decode(data, **kw)
    assert e.value.reason in REASONS
    return e.value.reason


def test_every_kind_has_an_example():
    assert set(EXAMPLES) == set(m.MESSAGE_TYPES)


@pytest.mark.parametrize("kind", sorted(m.MESSAGE_TYPES))
def test_golden_bytes(kind):
    golden = (GOLDEN / f"{kind}.msgpack").read_bytes()
    assert encode(EXAMPLES[kind]) == golden, "wire bytes changed: see tests/data/golden/regenerate.py"
    decoded = decode(golden)
    assert_same(EXAMPLES[kind], decoded)
    assert encode(decoded) == golden


def test_layout_is_version_kind_then_fields():
    obj = _raw(EXAMPLES["heartbeat"])
    assert list(obj) == ["v", "kind", "worker_id", "frames_total", "episodes_total", "video_fps",
                         "frames_per_s", "wall_time", "reward_scale", "reward_clip", "death_penalty",
                         "survival_bonus"]
    assert obj["v"] == SCHEMA_VERSION and obj["kind"] == "heartbeat"
    arr = _raw(EXAMPLES["transitions"])["state"]
    assert arr == {"dtype": "<f2", "shape": [2, 3], "data": arr["data"]} and len(arr["data"]) == 12


def test_decoded_arrays_are_read_only_views():
    msg = decode(encode(EXAMPLES["transitions"]))
    assert not msg.state.flags.writeable


def test_expect_filters_kinds():
    data = encode(EXAMPLES["ack"])
    assert isinstance(decode(data, expect=m.Ack), m.Ack)
    assert isinstance(decode(data, expect=(m.SampleReply, m.Ack)), m.Ack)
    assert _reason(data, expect=m.SampleReply) == "unexpected_kind"


@pytest.mark.parametrize("v", [0, 1, SCHEMA_VERSION + 1, None, "2", True, 2.0, float(SCHEMA_VERSION)])
def test_wrong_version(v):
    obj = _raw(EXAMPLES["ack"])
    obj["v"] = v
    with pytest.raises(MessageError) as e:
        decode(msgpack.packb(obj))
    assert e.value.reason == "wrong_version"
    assert f"got version {v!r}, expected {SCHEMA_VERSION}" in str(e.value)


def test_schema_1_transitions_still_read_with_derived_labels():
    """Schema 1 had no expert labels and no row numbers; the replay keeps transition batches as
    wire bytes, so the bytes a schema-1 worker sent (golden, kept from then) must still read: the
    expert's own rows labelled with its action, the others unlabelled, first_row -1 (not numbered:
    the replay does not account it)."""
    old = (GOLDEN / "v1" / "transitions.msgpack").read_bytes()
    raw = msgpack.unpackb(old)
    assert raw["v"] == 1 and "expert_action" not in raw and "first_row" not in raw
    batch = decode(old, expect=m.TransitionBatch)
    new = EXAMPLES["transitions"]
    for name in ("episode_id", "step", "actor", "action", "state", "truncated"):
        np.testing.assert_array_equal(getattr(batch, name), getattr(new, name))
    np.testing.assert_array_equal(batch.expert_action, [3, m.NO_ACTION])   # expert row; truncated row
    assert batch.first_row == -1 and new.first_row == 126
    assert encode(batch) == encode(dataclasses.replace(new, first_row=-1))   # re-sent, it is today's message


def test_schema_1_reads_only_what_it_lacks():
    """An old version is read only for the kinds it is known for, and only without the fields it lacked."""
    obj = _raw(EXAMPLES["transitions"])
    obj["v"] = 1   # a schema-1 batch cannot carry labels: refused, not half-read
    assert _reason(msgpack.packb(obj)) == "bad_field"
    del obj["expert_action"]   # nor row numbers
    assert _reason(msgpack.packb(obj)) == "bad_field"
    del obj["first_row"]
    assert decode(msgpack.packb(obj), expect=m.TransitionBatch).first_row == -1
    ack = _raw(EXAMPLES["ack"])
    ack["v"] = 1
    assert _reason(msgpack.packb(ack)) == "wrong_version"


REWARD_SETTINGS = ("reward_scale", "reward_clip", "death_penalty", "survival_bonus")


def test_schema_2_golden_files_cover_every_schema_2_kind():
    """tests/data/golden/v2/ holds the bytes schema 2 wrote (the golden files as they were before
    schema 3), one per kind schema 2 had, all of which UPGRADES still reads."""
    assert SCHEMA_VERSION == 3
    assert {p.stem for p in (GOLDEN / "v2").glob("*.msgpack")} == set(UPGRADES[2])
    assert set(UPGRADES[2]) <= set(m.MESSAGE_TYPES)


@pytest.mark.parametrize("kind", sorted(UPGRADES[2]))
def test_schema_2_bytes_still_read(kind):
    """Every schema-2 kind still decodes (the replay keeps schema-2 transition batches in Redis; a
    peer of the previous release still talks): the same message as today's example, except a
    heartbeat's reward settings, which schema 2 lacked: NaN, unknown.  Re-encoded, it is today's."""
    old = (GOLDEN / "v2" / f"{kind}.msgpack").read_bytes()
    raw = msgpack.unpackb(old)
    assert raw["v"] == 2 and raw["kind"] == kind
    msg = decode(old)
    want = EXAMPLES[kind]
    if kind == "heartbeat":
        assert not any(name in raw for name in REWARD_SETTINGS)
        assert all(np.isnan(getattr(msg, name)) for name in REWARD_SETTINGS) and not msg.rewards_known
        want = dataclasses.replace(want, **{name: float("nan") for name in REWARD_SETTINGS})
        for name in ("worker_id", "frames_total", "episodes_total", "video_fps", "frames_per_s", "wall_time"):
            assert getattr(msg, name) == getattr(want, name)
    else:
        assert_same(want, msg)
        assert encode(msg) == (GOLDEN / f"{kind}.msgpack").read_bytes()
    assert encode(msg) == encode(want)
    assert msgpack.unpackb(encode(msg))["v"] == SCHEMA_VERSION


def test_schema_2_heartbeat_reads_only_without_the_reward_settings():
    """A schema-2 heartbeat cannot carry reward settings (refused, not half-read); a schema-3 one
    must carry all four; a schema-1 heartbeat was never readable and still is not."""
    obj = _raw(EXAMPLES["heartbeat"])
    obj["v"] = 2
    assert _reason(msgpack.packb(obj)) == "bad_field"
    for name in REWARD_SETTINGS:
        del obj[name]
    assert not decode(msgpack.packb(obj), expect=m.Heartbeat).rewards_known
    obj["v"] = SCHEMA_VERSION   # today's version without them
    assert _reason(msgpack.packb(obj)) == "bad_field"
    obj["v"] = 1
    assert _reason(msgpack.packb(obj)) == "wrong_version"


def test_heartbeat_reward_settings_round_trip_and_unknown_is_all_nan():
    hb = decode(encode(EXAMPLES["heartbeat"]), expect=m.Heartbeat)
    assert (hb.reward_scale, hb.reward_clip, hb.death_penalty, hb.survival_bonus) == (0.01, 10.0, 5.0, -0.25)
    assert hb.rewards_known
    unknown = m.Heartbeat("w0", 1, 0, 60.0, 27.5, 0.0)   # without them: unknown, as schema 2 means
    back = decode(encode(unknown), expect=m.Heartbeat)
    assert not back.rewards_known and np.isnan(back.survival_bonus)


def test_missing_version():
    obj = _raw(EXAMPLES["ack"])
    del obj["v"]
    assert _reason(msgpack.packb(obj)) == "wrong_version"


@pytest.mark.parametrize("kind", ["nope", 3, None, ["ack"]])
def test_unknown_kind(kind):
    obj = _raw(EXAMPLES["ack"])
    obj["kind"] = kind
    assert _reason(msgpack.packb(obj)) == "unknown_kind"


def test_truncated_bytes():
    data = encode(EXAMPLES["transitions"])
    for cut in (0, 1, 10, len(data) // 2, len(data) - 1):
        assert _reason(data[:cut]) == "not_msgpack"
    assert _reason(data + b"\x00") == "not_msgpack"  # trailing garbage


def test_not_a_map():
    assert _reason(msgpack.packb([1, "ack"])) == "not_a_map"
    assert _reason(msgpack.packb(5)) == "not_a_map"


def test_array_length_mismatch():
    obj = _raw(EXAMPLES["transitions"])
    obj["state"]["data"] = obj["state"]["data"][:-2]
    assert _reason(msgpack.packb(obj, use_bin_type=True)) == "bad_array"


@pytest.mark.parametrize("bad", [
    {"dtype": "|O", "shape": [1], "data": b"\0" * 8},          # object dtype: never
    {"dtype": "float32", "shape": [1], "data": b"\0" * 4},     # only canonical strings
    {"dtype": "<f4", "shape": [-1], "data": b""},
    {"dtype": "<f4", "shape": [True], "data": b"\0" * 4},
    {"dtype": "<f4", "shape": "3", "data": b"\0" * 12},
    {"dtype": "<f4", "shape": [3], "data": "abc"},             # str, not bin
    {"dtype": "<f4", "shape": [0, 2 ** 62, 2 ** 62], "data": b""},
    {"dtype": "<f4", "shape": [1] * 20, "data": b"\0" * 4},
    {"dtype": "|b1", "shape": [2], "data": b"\x00\x02"},       # bools must be 0/1
    {"dtype": "<f4", "shape": [1]},
    [1, 2, 3],
])
def test_bad_arrays(bad):
    obj = _raw(EXAMPLES["priority_update"])
    obj["priority"] = bad
    assert _reason(msgpack.packb(obj, use_bin_type=True)) in ("bad_array", "bad_field")


def test_transitions_mismatched_rows():
    ex = EXAMPLES["transitions"]
    bad = dataclasses.replace(ex, reward_game=np.zeros(3, np.float32))
    with pytest.raises(MessageError) as e:
        encode(bad)
    assert e.value.reason == "bad_field" and "rows" in str(e.value)
    # and on the receiving side, from hand-made bytes
    obj = _raw(ex)
    obj["reward_game"] = {"dtype": "<f4", "shape": [3], "data": b"\0" * 12}
    assert _reason(msgpack.packb(obj, use_bin_type=True)) == "bad_field"


@pytest.mark.parametrize("change", [
    dict(state=np.zeros(6, np.float16)),                      # not 2-D
    dict(state=np.zeros((2, 3), np.float64)),                 # float64 states not allowed
    dict(action=np.array([3, 4], np.int16)),                  # truncated row with an action
    dict(actor=np.array([0, 9], np.uint8)),                   # unknown actor
    dict(terminal=np.array([False, True])),                   # terminal and truncated
    dict(step=np.array([0, 1], np.int64)),                    # wrong dtype
])
def test_transitions_validation(change):
    with pytest.raises(MessageError):
        encode(dataclasses.replace(EXAMPLES["transitions"], **change))


def test_sample_reply_failure_and_state_mismatch():
    fail = m.SampleReply.failure(3, "samples-per-insert cap", state_dim=4)
    back = decode(encode(fail), expect=m.SampleReply)
    assert back.error == "samples-per-insert cap" and back.state.shape == (0, 4)
    assert decode(encode(m.ExpertReply.failure(4, "x"))).actions.shape == (0,)
    ex = EXAMPLES["sample_reply"]
    with pytest.raises(MessageError):
        encode(dataclasses.replace(ex, next_state=ex.next_state.astype(np.float16)))


@pytest.mark.parametrize("field,value", [
    ("request_id", True), ("request_id", 1.5), ("request_id", "1"), ("error", 5),
])
def test_scalar_types_rejected(field, value):
    obj = _raw(EXAMPLES["ack"])
    obj[field] = value
    assert _reason(msgpack.packb(obj)) == "bad_field"
    with pytest.raises(MessageError):  # and the sender is stopped too
        encode(dataclasses.replace(EXAMPLES["ack"], **{field: value}))


def test_encode_rejects_ints_msgpack_cannot_carry():
    with pytest.raises(MessageError):
        encode(m.Ack(2 ** 64, None))


def test_floats_accept_ints_and_numpy_scalars_encode():
    obj = _raw(EXAMPLES["heartbeat"])
    obj["video_fps"] = 60
    msg = decode(msgpack.packb(obj))
    assert msg.video_fps == 60.0 and type(msg.video_fps) is float
    hb = dataclasses.replace(EXAMPLES["heartbeat"], frames_total=np.int64(100000),
                             video_fps=np.float32(60.0))
    assert encode(hb) == encode(EXAMPLES["heartbeat"])


def test_missing_and_extra_fields():
    obj = _raw(EXAMPLES["ack"])
    del obj["error"]
    assert _reason(msgpack.packb(obj)) == "bad_field"
    obj = _raw(EXAMPLES["ack"])
    obj["surprise"] = 1
    assert _reason(msgpack.packb(obj)) == "bad_field"


def test_dict_and_arrays_fields():
    obj = _raw(EXAMPLES["control_request"])
    obj["settings"] = {"lr": [1, 2]}
    assert _reason(msgpack.packb(obj)) == "bad_field"
    obj["settings"] = {"lr": None}
    assert decode(msgpack.packb(obj)).settings == {"lr": None}
    obj = _raw(EXAMPLES["weights"])
    obj["weights"]["fc1.bias"]["dtype"] = "<c8"
    assert _reason(msgpack.packb(obj, use_bin_type=True)) == "bad_array"


def test_game_state_checks():
    def mutated(**changes):
        obj = _raw(EXAMPLES["expert_request"])
        for k, v in changes.items():
            if v is None:
                del obj["states"][k]
            else:
                obj["states"][k] = v
        return _reason(msgpack.packb(obj, use_bin_type=True))
    data = _raw(EXAMPLES["expert_request"])["states"]["data"]
    assert mutated(layout=None) == "bad_game_state"
    assert mutated(layout=12345) == "bad_game_state"           # a peer with another GameState layout
    assert mutated(n=3) == "bad_game_state"                    # 3 states announced, 2 sent
    assert mutated(data=data[:-1]) == "bad_game_state"         # truncated record
    assert mutated(n=-1) == "bad_game_state"
    assert mutated(extra=1) == "bad_game_state"
    # a bool field holding something other than 0/1
    from tempest_common.wire import _GS_DTYPE
    records = np.frombuffer(data, _GS_DTYPE).copy()
    records.view(np.uint8).reshape(2, -1)[:, _GS_DTYPE.fields["attract"][1]] = 7
    assert mutated(data=records.tobytes()) == "bad_game_state"
    single = EXAMPLES["expert_request"].states[0]  # unbatched state: not allowed on the wire
    with pytest.raises(MessageError):
        encode(m.ExpertRequest(1, single))


def test_encode_rejects_unregistered_and_non_arrays():
    with pytest.raises(MessageError):
        encode(object())
    with pytest.raises(MessageError):
        encode(m.PriorityUpdate(1, [1, 2], np.zeros(2, np.float32)))
    with pytest.raises(MessageError):
        encode(m.PriorityUpdate(1, np.zeros(2, np.uint64), np.zeros(2, np.complex64)))


def test_big_endian_arrays_are_normalised():
    w = {"a": np.arange(3, dtype=">f4")}
    msg = dataclasses.replace(EXAMPLES["weights"], weights=w)
    back = decode(encode(msg))
    assert back.weights["a"].dtype.str == "<f4" and back.weights["a"].tolist() == [0, 1, 2]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_bytes_only_message_error(data):
    try:
        decode(data)
    except MessageError as e:
        assert e.reason in REASONS


_msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 64 - 1) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(sorted(m.MESSAGE_TYPES)), field_index=st.integers(0, 20),
       value=_msgpack_values)
def test_fuzz_fields_only_message_error(kind, field_index, value):
    """A valid message with one field replaced by an arbitrary msgpack value."""
    obj = _raw(EXAMPLES[kind])
    keys = [k for k in obj if k not in ("v", "kind")]
    obj[keys[field_index % len(keys)]] = value
    try:
        decode(msgpack.packb(obj, use_bin_type=True))
    except MessageError as e:
        assert e.reason in REASONS


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(sorted(m.MESSAGE_TYPES)), pos=st.integers(0, 10 ** 6),
       byte=st.integers(0, 255))
def test_fuzz_bit_flips_only_message_error(kind, pos, byte):
    data = bytearray((GOLDEN / f"{kind}.msgpack").read_bytes())
    data[pos % len(data)] = byte
    try:
        decode(bytes(data))
    except MessageError as e:
        assert e.reason in REASONS
