"""Seeded generators of hostile input for every ZeroMQ endpoint the services receive on.

Each generator yields `Shot`s: the frames to send and what the receiver must do with them:
  - `expect` = (counter, reason): the service must count it under exactly that reason (the
    input is built so that only that outcome is right: a truncated message is `not_msgpack`,
    a heartbeat counter of 2^64-1 is `bad_field`, a control "set" without the token is
    `unauthorized`, ...);
  - `expect` = REJECT: it must be refused and counted, the reason is not pinned (random bytes
    may or may not parse as msgpack; a NaN wait_s may be refused by the wire or the replay);
  - `expect` = None: anything goes (a bit flip may leave a valid message), as long as the
    service survives it: valid and hostile-but-valid messages.
`rows` (priority updates only) says how many rows must be counted under the reason.

The counters are named by their Prometheus family; `tests/fuzz/test_flood.py` checks that each
family's increase covers what was sent.  Nothing here talks to a socket.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import msgpack
import numpy as np

from tempest_common.actions import NUM_ACTIONS
from tempest_common.game_state import FIELD_SPECS, GameState
from tempest_common.messages import (MAX_BATCH_ROWS, ControlRequest, EpisodeSummary,
                                     ExpertRequest, Heartbeat, PriorityUpdate, SampleRequest, TransitionBatch)
from tempest_common.wire import _CODECS, SCHEMA_VERSION, _field_specs, encode

REJECT = "reject"
U64_MAX, I64_MIN, I64_MAX = 2 ** 64 - 1, -(2 ** 63), 2 ** 63 - 1
NAN, INF = float("nan"), float("inf")

# the counter families of each service (Prometheus names, without labels)
REPLAY_MALFORMED = "tempest_replay_malformed_total"
REPLAY_REFUSED = "tempest_replay_refused_total"
REPLAY_BAD_PRIORITIES = "tempest_replay_bad_priorities_total"
EXPERT_ERRORS = "tempest_expert_errors_total"
LEARNER_MALFORMED = "tempest_learner_malformed_total"
LEARNER_CONTROL_REFUSED = "tempest_learner_control_refused_total"
LEARNER_REJECTED = "tempest_learner_rejected_messages_total"


@dataclass
class Shot:
    frames: list[bytes]
    expect: tuple[str, str] | str | None
    category: str
    rows: int = 1


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _obj(msg) -> dict:
    """The wire map of `msg` without encode's own checks (what a hostile peer can send)."""
    out = {"v": SCHEMA_VERSION, "kind": msg.KIND}
    for name, meta in _field_specs(type(msg)):
        out[name] = _CODECS[meta["wire"]][0](getattr(msg, name), name)
    return msgpack.unpackb(_pack(out), raw=False)


def _unchecked(msg) -> bytes:
    return _pack(_obj(msg))


def _array(a: np.ndarray) -> dict:
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}


# -- generic mutations of any endpoint's valid messages ------------------------------------------
def wire_mutation(rng: np.random.Generator, valid, malformed: str, unexpected_kinds: list[str]) -> Shot:
    """One malformed message, derived from the valid message `valid`, counted in `malformed`."""
    data = encode(valid)
    obj = msgpack.unpackb(data, raw=False)
    fields = [k for k in obj if k not in ("v", "kind")]
    k = int(rng.integers(0, 15))
    if k == 0:      # random bytes: anything but a valid message; the reason depends on the bytes
        return Shot([rng.bytes(int(rng.integers(1, 600)))], REJECT, "random_bytes")
    if k == 1:      # 0xc1 is never used by msgpack
        return Shot([b"\xc1" + rng.bytes(int(rng.integers(0, 300)))], (malformed, "not_msgpack"), "never_used_byte")
    if k == 2:      # a strict prefix of one top-level map is always incomplete
        return Shot([data[:int(rng.integers(0, len(data)))]], (malformed, "not_msgpack"), "truncated")
    if k == 3:      # bytes after the message
        return Shot([data + rng.bytes(int(rng.integers(1, 32)))], (malformed, "not_msgpack"), "trailing_bytes")
    if k == 4:      # bit flips: may even stay valid
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(0, len(buf)))
            buf[i] ^= 1 << int(rng.integers(0, 8))
        return Shot([bytes(buf)], None, "bit_flips")
    if k == 5:
        other = [[1, 2, 3], 7, "expert_request", None, 1.5, b"\x00" * 8, True][int(rng.integers(0, 7))]
        return Shot([_pack(other)], (malformed, "not_a_map"), "not_a_map")
    if k == 6:
        obj["v"] = [0, 2, 99, -1, U64_MAX, I64_MIN, "1", None, True, 1.0][int(rng.integers(0, 10))]
        return Shot([_pack(obj)], (malformed, "wrong_version"), "wrong_version")
    if k == 7:
        del obj["v"]
        return Shot([_pack(obj)], (malformed, "wrong_version"), "no_version")
    if k == 8:
        obj["kind"] = ["", "EXPERT_REQUEST", "x" * 200, 5, None, "pickle", ["transitions"]][int(rng.integers(0, 7))]
        return Shot([_pack(obj)], (malformed, "unknown_kind"), "unknown_kind")
    if k == 9:
        obj["kind"] = unexpected_kinds[int(rng.integers(0, len(unexpected_kinds)))]
        return Shot([_pack(obj)], (malformed, "unexpected_kind"), "unexpected_kind")
    if k == 10:
        del obj[fields[int(rng.integers(0, len(fields)))]]
        return Shot([_pack(obj)], (malformed, "bad_field"), "missing_field")
    if k == 11:
        obj["__class__"] = "os.system"
        return Shot([_pack(obj)], (malformed, "bad_field"), "extra_field")
    if k == 12:     # a field of the wrong type: the reason follows the field's wire type
        name = fields[int(rng.integers(0, len(fields)))]
        wire = next(f.metadata["wire"] for f in type(valid).__dataclass_fields__.values() if f.name == name)
        obj[name] = {"array": "x", "arrays": 3, "game_state": [1], "optional_str": 5, "str": 5, "bool": 2,
                     "dict": [1, 2], "int": "1", "float": "1.0"}[wire]
        reason = {"array": "bad_array", "game_state": "bad_game_state"}.get(wire, "bad_field")
        return Shot([_pack(obj)], (malformed, reason), "wrong_type")
    if k == 13:     # a map nested far deeper than msgpack unpacks, or a header claiming 4 GB
        bomb = [b"\x91" * 5000 + b"\x00", b"\xdd\xff\xff\xff\xff\x00", b"\xc6\xff\xff\xff\xff" + b"\x00" * 8,
                b"\xdf\xff\xff\xff\xff"][int(rng.integers(0, 4))]
        return Shot([bomb], REJECT, "msgpack_bomb")
    return Shot([b""], (malformed, "not_msgpack"), "empty")


def array_attack(rng: np.random.Generator, obj: dict, field: str, malformed: str) -> Shot:
    """An array field of `obj` replaced by a map that lies about its contents."""
    k = int(rng.integers(0, 6))
    arr = dict(obj[field])
    if k == 0:      # a huge claimed shape with a few bytes of data
        arr["shape"] = [2 ** 40, *arr["shape"][1:]] if arr["shape"] else [2 ** 40]
        reason = "bad_array"
    elif k == 1:
        arr["dtype"] = ["|O", "<V8", "object", "<M8[s]", ">f4x", 7][int(rng.integers(0, 6))]
        reason = "bad_array"
    elif k == 2:
        arr["shape"] = [1] * 9
        reason = "bad_array"
    elif k == 3:
        arr["shape"] = [-1]
        reason = "bad_array"
    elif k == 4:    # a product that overflows 64 bits, with no data
        arr["shape"], arr["data"] = [2 ** 62, 2 ** 62, 4], b""
        reason = "bad_array"
    else:
        arr["data"] = arr["data"] + b"\x00"
        reason = "bad_array"
    obj = dict(obj)
    obj[field] = arr
    return Shot([_pack(obj)], (malformed, reason), "array_" + ("huge_shape", "dtype", "ndim", "negative",
                                                                "overflow", "extra_byte")[k])


def _weighted(rng: np.random.Generator, table: list[tuple[float, Callable[[], Shot]]]) -> Shot:
    w = np.array([t[0] for t in table], float)
    return table[int(rng.choice(len(table), p=w / w.sum()))][1]()


# -- replay PULL: TransitionBatch ------------------------------------------------------------------
def transitions(rng: np.random.Generator, rows: int, state_dim: int, stream: str = "fuzz",
                dtype=np.float16, state=None, **override) -> TransitionBatch:
    """A real-looking batch: one stream, steps in order, states in [0, 1], no terminal row."""
    z = {
        "stream_id": stream, "worker_id": "fuzz-worker",
        "episode_id": np.full(rows, int(rng.integers(0, 1000)), np.int64),
        "step": np.arange(rows, dtype=np.int32), "actor": rng.integers(0, 4, rows).astype(np.uint8),
        "action": rng.integers(0, NUM_ACTIONS, rows).astype(np.int16),
        "reward_game": rng.choice([0.0, 0.0, 0.0, 150.0], rows).astype(np.float32),
        "reward_shaping": np.full(rows, 0.01, np.float32),
        "terminal": np.zeros(rows, bool), "truncated": np.zeros(rows, bool),
        "state": rng.random((rows, state_dim)).astype(dtype) if state is None else state,
    }
    z.update(override)
    return TransitionBatch(**z)


def replay_pull_shots(rng: np.random.Generator, n: int, state_dim: int) -> Iterator[Shot]:
    M = REPLAY_MALFORMED
    unexpected = ["sample_request", "episode", "heartbeat", "expert_request", "control_request"]

    def rows() -> int:
        return int(rng.integers(1, 33))

    def valid():
        return Shot([encode(transitions(rng, rows(), state_dim, f"fuzz-{rng.integers(0, 50)}"))], None, "valid")

    def build(category: str, expect, **kw):
        def make() -> Shot:
            b = rows()
            fields = {k: (v(b) if callable(v) else v) for k, v in kw.items()}
            obj = _obj(transitions(rng, b, state_dim))
            for name, value in fields.items():   # bypass encode's own validation: build the map
                obj[name] = _array(value) if isinstance(value, np.ndarray) else value
            return Shot([_pack(obj)], expect, category)
        return make

    def finite_states(value: float, dtype=np.float32):
        return lambda b: np.full((b, state_dim), value, dtype)

    table = [
        (12, valid),
        (3, build("states_1e6", None, state=finite_states(1e6))),
        (3, build("states_nan", (M, "nonfinite"), state=finite_states(NAN))),
        (3, build("states_inf", (M, "nonfinite"), state=finite_states(-INF))),
        (2, build("states_f16_overflow", (M, "nonfinite"), state=lambda b: np.full((b, state_dim), np.inf, np.float16))),
        (2, build("reward_1e6", None, reward_game=lambda b: np.full(b, 1e6, np.float32))),
        (3, build("reward_1e7", (M, "bad_field"), reward_game=lambda b: np.full(b, 1e7, np.float32))),
        (3, build("reward_nan", (M, "bad_field"), reward_shaping=lambda b: np.full(b, NAN, np.float32))),
        (3, build("action_out_of_range", (M, "bad_field"),
                  action=lambda b: np.full(b, [NUM_ACTIONS, 32767, -2, -32768][int(rng.integers(0, 4))], np.int16))),
        (3, build("actor_out_of_range", (M, "bad_field"),
                  actor=lambda b: np.full(b, int(rng.integers(4, 256)), np.uint8))),
        (2, build("episode_negative", (M, "bad_field"), episode_id=lambda b: np.full(b, -1, np.int64))),
        (2, build("step_negative", (M, "bad_field"), step=lambda b: np.full(b, -5, np.int32))),
        (2, build("episode_2p63", None, episode_id=lambda b: np.full(b, I64_MAX, np.int64))),
        (2, build("terminal_and_truncated", (M, "bad_field"), terminal=lambda b: np.ones(b, bool),
                  truncated=lambda b: np.ones(b, bool), action=lambda b: np.full(b, -1, np.int16))),
        (2, build("no_action_not_truncated", (M, "bad_field"), action=lambda b: np.full(b, -1, np.int16))),
        (2, build("state_dim_wrong", (M, "bad_field"), state=lambda b: np.zeros((b, state_dim + 1), np.float16))),
        (2, build("rows_mismatch", (M, "bad_field"), step=lambda b: np.arange(b + 1, dtype=np.int32))),
        (2, build("state_float64", (M, "bad_field"), state=lambda b: np.zeros((b, state_dim), np.float64))),
        (2, build("bool_byte_2", (M, "bad_array"),
                  terminal=lambda b: {"dtype": "|b1", "shape": [b], "data": b"\x02" * b})),
        (1, build("empty_batch", None, **{k: (lambda dt: (lambda b: np.zeros(0, dt)))(dt) for k, dt in (
            ("episode_id", np.int64), ("step", np.int32), ("actor", np.uint8), ("action", np.int16),
            ("reward_game", np.float32), ("reward_shaping", np.float32), ("terminal", bool), ("truncated", bool))},
            state=lambda b: np.zeros((0, state_dim), np.float16))),
        (2, lambda: Shot([encode(transitions(rng, rows(), state_dim, stream=rng.bytes(8).hex() * 4))], None,
                         "random_stream_id")),
        (5, lambda: array_attack(rng, _obj(transitions(rng, rows(), state_dim)),
                                 ["episode_id", "state", "action", "terminal"][int(rng.integers(0, 4))], M)),
        (30, lambda: wire_mutation(rng, transitions(rng, rows(), state_dim), M, unexpected)),
        (1, lambda: Shot([b"junk frame", encode(transitions(rng, 2, state_dim))], None, "multipart")),
    ]
    for _ in range(n):
        yield _weighted(rng, table)


def replay_pull_specials(rng: np.random.Generator, state_dim: int) -> Iterator[Shot]:
    """Rare, large ones (once each per flood): one-row batches with a 100 KB stream id (refused: the
    schema bounds names to MAX_NAME_CHARS), then batches of MAX_BATCH_ROWS + 1 rows (last: whether the replay
    refuses them as bad_field or its size limit cuts the connection, and with it what follows on
    that connection, depends on its limits)."""
    for i in range(LONG_ID_MESSAGES):
        yield Shot([_unchecked(transitions(rng, 1, state_dim, stream=f"{i:06d}" + "s" * (LONG_ID_BYTES - 6)))],
                   (REPLAY_MALFORMED, "bad_field"), "long_stream_id")
    for _ in range(2):
        b = MAX_BATCH_ROWS + 1
        obj = _obj(transitions(rng, 1, state_dim))
        big = transitions(rng, b, state_dim, dtype=np.float16)
        for name in ("episode_id", "step", "actor", "action", "reward_game", "reward_shaping", "terminal",
                     "truncated", "state"):
            obj[name] = _array(getattr(big, name))
        yield Shot([_pack(obj)], None, "rows_over_max")


LONG_ID_BYTES = 100_000        # a 100 KB stream id: a one-row batch stays under the PULL's size limit
LONG_ID_MESSAGES = 1_500       # 150 MB of ids, were the replay to keep every stream's id


# -- replay ROUTER: SampleRequest / PriorityUpdate -------------------------------------------------
def replay_router_shots(rng: np.random.Generator, n: int, filled: int) -> Iterator[Shot]:
    """`filled`: rows the replay holds from the fill (seq 0..filled-1 are real, sampleable rows);
    0 before the fill (then no index is valid, and priority rows only test bad indices)."""
    M, R, P = REPLAY_MALFORMED, REPLAY_REFUSED, REPLAY_BAD_PRIORITIES
    unexpected = ["transitions", "episode", "heartbeat", "expert_request", "control_request", "ack"]
    rid = lambda: int(rng.integers(1, 2 ** 31))  # noqa: E731

    def sample(category, expect, batch_size=None, n_step=None, gamma=None, prioritized=None, beta=None, wait_s=None):
        def make() -> Shot:
            obj = _obj(SampleRequest(rid(), 32, 3, 0.99, True, 0.4, 0.0))
            for name, v in (("batch_size", batch_size), ("n_step", n_step), ("gamma", gamma),
                            ("prioritized", prioritized), ("beta", beta), ("wait_s", wait_s)):
                if v is not None:
                    obj[name] = v() if callable(v) else v
            return Shot([_pack(obj)], expect, category)
        return make

    def valid_sample() -> Shot:
        return Shot([encode(SampleRequest(rid(), int(rng.integers(1, 65)), int(rng.integers(1, 6)),
                                          float(rng.random()), bool(rng.integers(0, 2)), float(rng.random()),
                                          float(rng.choice([0.0, 0.0, 0.01, 1e9]))))], None, "valid_sample")

    def priorities(category, index, priority, reason) -> Callable[[], Shot]:
        def make() -> Shot:
            k = int(rng.integers(1, 33))
            msg = PriorityUpdate(rid(), np.asarray(index(k), np.uint64), np.asarray(priority(k), np.float32))
            return Shot([encode(msg)], (P, reason) if reason else None, category, rows=k)
        return make

    good_index = (lambda k: rng.integers(0, filled, k)) if filled else None
    bad_index = lambda k: np.array([U64_MAX, 2 ** 63, 2 ** 63 + 7, 10 ** 15], np.uint64)[rng.integers(0, 4, k)]  # noqa: E731
    table = [
        (10, valid_sample),
        (3, sample("batch_size_0", (R, "bad_request"), batch_size=0)),
        (3, sample("batch_size_huge", (R, "bad_request"), batch_size=lambda: [I64_MAX, U64_MAX, 2 ** 40][int(rng.integers(0, 3))])),
        (2, sample("batch_size_negative", (M, "bad_field"), batch_size=-1)),
        (2, sample("n_step_0", (M, "bad_field"), n_step=0)),
        (2, sample("n_step_huge", (R, "bad_request"), n_step=lambda: [101, 10 ** 9, U64_MAX][int(rng.integers(0, 3))])),
        (3, sample("gamma_bad", (R, "bad_request"), gamma=lambda: [NAN, INF, -0.5, 1.5, -INF][int(rng.integers(0, 5))])),
        (2, sample("beta_bad", (R, "bad_request"), beta=lambda: [NAN, 2.0, -1.0, INF][int(rng.integers(0, 4))])),
        (2, sample("wait_negative", (M, "bad_field"), wait_s=-1.0)),
        (2, sample("wait_nan", REJECT, wait_s=NAN)),
        (3, sample("wait_1e9", None, wait_s=1e9, batch_size=lambda: int(rng.integers(1, 65)))),
        (2, sample("wait_inf", None, wait_s=INF)),
        (4, priorities("priority_bad_index", bad_index, lambda k: np.ones(k), "bad_index")),
        (2, lambda: Shot([_pack({**_obj(PriorityUpdate(rid(), np.zeros(3, np.uint64), np.ones(3, np.float32))),
                                 "priority": _array(np.ones(2, np.float32))})], (M, "bad_field"), "priority_rows_mismatch")),
        (2, lambda: Shot([_pack({**_obj(PriorityUpdate(rid(), np.zeros(3, np.uint64), np.ones(3, np.float32))),
                                 "index": _array(np.zeros(3, np.float64))})], (M, "bad_field"), "priority_index_float")),
        (3, lambda: array_attack(rng, _obj(PriorityUpdate(rid(), np.zeros(4, np.uint64), np.ones(4, np.float32))),
                                 ["index", "priority"][int(rng.integers(0, 2))], M)),
        (25, lambda: wire_mutation(rng, [SampleRequest(rid(), 32, 3, 0.99, True, 0.4, 0.0),
                                         PriorityUpdate(rid(), np.arange(4, dtype=np.uint64), np.ones(4, np.float32))]
                                   [int(rng.integers(0, 2))], M, unexpected)),
        (1, lambda: Shot([b"junk", encode(SampleRequest(rid(), 8, 1, 0.9, False, 0.4, 0.0))], None, "multipart")),
    ]
    if filled:
        table += [
            (3, priorities("priority_valid", good_index, lambda k: rng.random(k) + 0.01, None)),
            (3, priorities("priority_nan", good_index, lambda k: rng.choice([NAN, INF, -INF], k), "nonfinite")),
            (3, priorities("priority_nonpositive", good_index, lambda k: rng.choice([0.0, -1.0, -1e30], k),
                           "nonpositive")),
            (2, priorities("priority_huge", good_index, lambda k: np.full(k, 1e38), "clamped")),
        ]
    for _ in range(n):
        yield _weighted(rng, table)


def replay_router_specials(rng: np.random.Generator, filled: int) -> Iterator[Shot]:
    """Rare, large ones: the largest sample (replies of MB), a priority update over its row limit."""
    for _ in range(3 if filled else 0):
        yield Shot([encode(SampleRequest(7, 1 << 16, 5, 0.99, True, 0.4, 0.0))], None, "largest_sample")
    for _ in range(2):
        k = (1 << 20) + 1
        yield Shot([encode(PriorityUpdate(8, np.zeros(k, np.uint64), np.ones(k, np.float32)))],
                   (REPLAY_REFUSED, "too_large"), "priority_rows_over_max")


# -- expert ROUTER: ExpertRequest -----------------------------------------------------------------
def any_states(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """GameState fields with every field any value of its dtype (booleans 0/1: the wire refuses
    other bytes)."""
    out = {}
    for name, (dt, shape) in FIELD_SPECS.items():
        dt = np.dtype(dt)
        if dt == np.bool_:
            out[name] = rng.integers(0, 2, (n, *shape)).astype(bool)
        else:
            info = np.iinfo(dt)
            out[name] = rng.integers(info.min, info.max, (n, *shape), dtype=dt, endpoint=True)
    return out


def random_states(rng: np.random.Generator, n: int) -> GameState:
    """any_states, often in play or zoom and alive (where the expert's rules do the most)."""
    out = any_states(rng, n)
    if rng.random() < 0.7:
        out["mode"] = rng.choice(np.array([0x04, 0x20], np.uint8), n)
        out["player_alive"] = np.ones(n, bool)
    return GameState(**out)


def expert_shots(rng: np.random.Generator, n: int, max_states: int) -> Iterator[Shot]:
    E = EXPERT_ERRORS
    unexpected = ["transitions", "episode", "sample_request", "expert_reply", "control_request"]
    rid = lambda: [0, 1, 2 ** 31, U64_MAX, I64_MIN][int(rng.integers(0, 5))]  # noqa: E731

    def request(b: int) -> ExpertRequest:
        return ExpertRequest(rid(), random_states(rng, b))

    def packed(category: str, reason: str, change: Callable[[dict], None]) -> Callable[[], Shot]:
        def make() -> Shot:
            obj = _obj(request(int(rng.integers(1, 9))))
            change(obj["states"])
            return Shot([_pack(obj)], (E, reason), category)
        return make

    def bool_byte(states: dict) -> None:
        data = bytearray(states["data"])
        data[1] = 2 + int(rng.integers(0, 254))     # `attract`, the record's second byte, a bool
        states["data"] = bytes(data)

    table = [
        (25, lambda: Shot([encode(request(int(rng.integers(1, 33))))], None, "valid")),
        (1, lambda: Shot([encode(request(0))], None, "no_states")),
        (0.3, lambda: Shot([encode(request(max_states))], None, "max_states")),
        (0.5, lambda: Shot([encode(request(max_states + int(rng.integers(1, 800))))], (E, "too_many_states"),
                           "too_many_states")),
        (3, packed("bool_byte", "bad_game_state", bool_byte)),
        (3, packed("layout", "bad_game_state", lambda s: s.update(layout=int(rng.integers(0, 2 ** 32))))),
        (3, packed("n_mismatch", "bad_game_state", lambda s: s.update(n=s["n"] + int(rng.choice([1, -1, 2 ** 40]))))),
        (2, packed("n_negative", "bad_game_state", lambda s: s.update(n=-1))),
        (2, packed("layout_huge", "bad_game_state", lambda s: s.update(layout="L" * 100_000))),
        (2, lambda: Shot([b"extra", encode(request(1))], (E, "bad_frames"), "multipart")),
        (1, lambda: Shot([b"", b"", encode(request(1))], (E, "bad_frames"), "multipart_empty")),
        (1, lambda: Shot([b"", encode(request(1))], None, "req_framing")),
        (25, lambda: wire_mutation(rng, request(int(rng.integers(1, 5))), E, unexpected)),
    ]
    for _ in range(n):
        yield _weighted(rng, table)


# -- learner PULL: EpisodeSummary / Heartbeat -------------------------------------------------------
def episode(rng: np.random.Generator, **override) -> EpisodeSummary:
    fields = dict(stream_id="fuzz", worker_id="fuzz-worker", episode_id=int(rng.integers(0, 10 ** 6)),
                  game_id=int(rng.integers(0, 10 ** 4)), evaluation=bool(rng.integers(0, 2)),
                  length=int(rng.integers(1, 5000)), game_reward=float(rng.integers(0, 5000)),
                  shaping_reward=float(rng.random()), score=int(rng.integers(0, 10_000)),
                  game_score=int(rng.integers(0, 100_000)), level=int(rng.integers(0, 99)),
                  end=["terminal", "truncated"][int(rng.integers(0, 2))], game_over=bool(rng.integers(0, 2)),
                  actor_counts={"expert": int(rng.integers(0, 1000)), "network": int(rng.integers(0, 1000))},
                  wall_time=1.7e9)
    fields.update(override)
    return EpisodeSummary(**fields)


def heartbeat(worker: str, frames: int, **override) -> Heartbeat:
    fields = dict(worker_id=worker, frames_total=frames, episodes_total=frames // 500, video_fps=60.0,
                  frames_per_s=900.0, wall_time=1.7e9)
    fields.update(override)
    return Heartbeat(**fields)


class LearnerInbox:
    """Heartbeats of a pool of well-behaved workers (small, plausible increases) among the hostile."""

    def __init__(self, rng: np.random.Generator, workers: int = 8):
        self.rng = rng
        self.frames = {f"fuzz-pool-{i}": 0 for i in range(workers)}
        self.fresh = 0

    def plausible(self) -> Heartbeat:
        w = list(self.frames)[int(self.rng.integers(0, len(self.frames)))]
        self.frames[w] += int(self.rng.integers(1, 300))
        return heartbeat(w, self.frames[w])

    def fresh_worker(self) -> str:
        self.fresh += 1
        return f"fuzz-fresh-{self.fresh}"


def learner_inbox_shots(rng: np.random.Generator, n: int) -> Iterator[Shot]:
    M, J = LEARNER_MALFORMED, LEARNER_REJECTED
    pool = LearnerInbox(rng)
    unexpected = ["transitions", "sample_request", "expert_request", "control_request", "weights"]

    def raw(category, expect, make_obj):
        return lambda: Shot([_pack(make_obj())], expect, category)

    def hb_obj(**fields) -> dict:
        return {**_obj(heartbeat(pool.fresh_worker(), 10)), **fields}

    def ep_obj(**fields) -> dict:
        return {**_obj(episode(rng)), **fields}

    table = [
        (15, lambda: Shot([encode(pool.plausible())], None, "heartbeat_valid")),
        (10, lambda: Shot([encode(episode(rng))], None, "episode_valid")),
        (3, lambda: Shot([encode(episode(rng, evaluation=True, game_over=True, end="terminal",
                                         game_score=999_999, score=999_999, length=2 ** 53, level=255,
                                         episode_id=2 ** 53, game_id=2 ** 53))], None, "episode_extremes")),
        (4, lambda: Shot([encode(heartbeat(pool.fresh_worker(), 2 ** 53))], (J, "implausible_frames"),
                         "heartbeat_2p53")),
        (3, raw("heartbeat_2p53_plus_1", (M, "bad_field"), lambda: hb_obj(frames_total=2 ** 53 + 1))),
        (3, raw("heartbeat_u64_max", (M, "bad_field"), lambda: hb_obj(frames_total=U64_MAX))),
        (2, raw("heartbeat_episodes_u64", (M, "bad_field"), lambda: hb_obj(episodes_total=U64_MAX))),
        (2, raw("heartbeat_negative", (M, "bad_field"), lambda: hb_obj(frames_total=-1))),
        (2, raw("heartbeat_fps_bad", (M, "bad_field"),
                lambda: hb_obj(video_fps=[NAN, INF, -1.0][int(rng.integers(0, 3))]))),
        (2, raw("episode_score_1e6", (M, "bad_field"), lambda: ep_obj(score=10 ** 6))),
        (2, raw("episode_game_score_negative", (M, "bad_field"), lambda: ep_obj(game_score=-1))),
        (2, raw("episode_level_256", (M, "bad_field"), lambda: ep_obj(level=256))),
        (2, raw("episode_end_bad", (M, "bad_field"), lambda: ep_obj(end="exploded"))),
        (2, raw("episode_length_2p53_plus_1", (M, "bad_field"), lambda: ep_obj(length=2 ** 53 + 1))),
        (2, raw("episode_reward_nan", (M, "bad_field"),
                lambda: ep_obj(game_reward=[NAN, INF][int(rng.integers(0, 2))]))),
        (2, raw("episode_counts_negative", (M, "bad_field"), lambda: ep_obj(actor_counts={"expert": -1}))),
        (2, raw("episode_counts_float", (M, "bad_field"), lambda: ep_obj(actor_counts={"expert": 1.5}))),
        (2, raw("episode_counts_nested", (M, "bad_field"), lambda: ep_obj(actor_counts={"expert": [1, 2]}))),
        (2, raw("episode_counts_u64", (M, "bad_field"), lambda: ep_obj(actor_counts={"expert": U64_MAX}))),
        (1, lambda: Shot([_unchecked(episode(rng, actor_counts={f"a{i}": i for i in range(3000)}))], (M, "bad_field"),
                         "episode_many_counts")),
        (25, lambda: wire_mutation(rng, [pool.plausible(), episode(rng)][int(rng.integers(0, 2))], M, unexpected)),
        (1, lambda: Shot([b"junk", encode(pool.plausible())], None, "multipart")),
    ]
    for _ in range(n):
        yield _weighted(rng, table)


def learner_inbox_specials(rng: np.random.Generator) -> Iterator[Shot]:
    """Heartbeats of fresh workers with 60 KB ids (under the inbox's 64 KB limit; refused: the
    schema bounds names to MAX_NAME_CHARS)."""
    for i in range(LONG_WORKER_MESSAGES):
        yield Shot([_unchecked(heartbeat(f"{i:06d}" + "w" * (LONG_WORKER_BYTES - 6), 100))], (LEARNER_MALFORMED, "bad_field"),
                   "long_worker_id")


LONG_WORKER_BYTES = 60_000
LONG_WORKER_MESSAGES = 2_000   # 120 MB of ids, were the learner to keep every worker's id


# -- learner control ROUTER: ControlRequest --------------------------------------------------------
BAD_SETTINGS = [  # (name, value): every one out of range, of the wrong type, or unknown
    ("lr", 0.0), ("lr", 2.0), ("lr", -1.0), ("lr", NAN), ("lr", INF), ("lr", "abc"), ("lr", "nan"), ("lr", True),
    ("lr", None), ("gamma", 1.5), ("gamma", -0.1), ("gamma", NAN), ("n_step", 0), ("n_step", 101),
    ("n_step", I64_MAX), ("n_step", U64_MAX), ("n_step", 2.5), ("batch_size", 0), ("batch_size", U64_MAX),
    ("batch_size", -5), ("tau", INF), ("epsilon", 1.0000001), ("epsilon", -INF), ("lr_schedule", "linear"),
    ("lr_schedule", 3), ("use_soft_target", 2), ("use_soft_target", "maybe"), ("per_beta", NAN),
    ("training_steps_per_sample", -1.0), ("training_steps_per_sample", INF), ("max_grad_norm", 1e300),
    ("expert_ratio_min", 7), ("gradient_accumulation_steps", 0), ("gradient_accumulation_steps", 10 ** 6),
    ("__class__", 1), ("no_such_setting", 1), ("", 0), ("x" * 256, 1.0), ("LR", 0.001), ("lr ", 0.001),
]
GOOD_SETTINGS = [("lr", 0.0005), ("gamma", 0.9), ("n_step", 2), ("epsilon", 0.2), ("tau", 0.01)]


def control_shots(rng: np.random.Generator, n: int, token: str) -> Iterator[Shot]:
    M, C = LEARNER_MALFORMED, LEARNER_CONTROL_REFUSED
    unexpected = ["transitions", "episode", "heartbeat", "sample_request", "control_reply"]
    rid = lambda: int(rng.integers(1, 2 ** 31))  # noqa: E731

    def bad_settings() -> dict:
        """One to three bad settings, sometimes beside a good one (the set must fail as a whole)."""
        out = dict(BAD_SETTINGS[int(i)] for i in rng.integers(0, len(BAD_SETTINGS), int(rng.integers(1, 4))))
        good, value = GOOD_SETTINGS[int(rng.integers(0, len(GOOD_SETTINGS)))]
        if rng.random() < 0.3 and good not in out:
            out[good] = value
            out = dict(sorted(out.items(), key=lambda _: rng.random()))
        return out

    def any_settings() -> dict:
        return dict([GOOD_SETTINGS[int(rng.integers(0, len(GOOD_SETTINGS)))]]) if rng.random() < 0.5 else bad_settings()

    def set_raw(category, expect, **fields):
        def make() -> Shot:
            obj = _obj(ControlRequest(rid(), "set", {}, token))
            obj.update({k: (v() if callable(v) else v) for k, v in fields.items()})
            return Shot([_pack(obj)], expect, category)
        return make

    wrong_tokens = ["", " ", token[:-1], token + "x", token.upper() if token != token.upper() else token.lower(),
                    "\x00" * len(token), "🙂" * 8, "x" * 256]
    table = [
        (15, lambda: Shot([encode(ControlRequest(rid(), "get", {}, ""))], None, "get")),
        (3, lambda: Shot([encode(ControlRequest(rid(), "get", any_settings(), "bogus"))], None, "get_with_junk")),
        (10, lambda: Shot([encode(ControlRequest(rid(), "set", any_settings(), ""))], (C, "unauthorized"),
                          "set_no_token")),
        (8, lambda: Shot([encode(ControlRequest(rid(), "set", any_settings(),
                                                wrong_tokens[int(rng.integers(0, len(wrong_tokens)))]))],
                         (C, "unauthorized"), "set_wrong_token")),
        (15, lambda: Shot([encode(ControlRequest(rid(), "set", bad_settings(), token))], (C, "bad_setting"),
                          "set_bad_setting")),
        (2, lambda: Shot([_unchecked(ControlRequest(rid(), "set", {f"unknown_{i}": i for i in range(2000)}, token))],
                         (M, "bad_field"), "set_many_unknown")),
        (2, set_raw("op_bad", (M, "bad_field"), op=lambda: ["delete", "", "SET", "get ", "exec"][int(rng.integers(0, 5))])),
        (2, set_raw("token_not_str", (M, "bad_field"), token=lambda: [None, 5, b"tok", ["t"]][int(rng.integers(0, 4))])),
        (2, set_raw("settings_nested", (M, "bad_field"), settings={"lr": [0.001]})),
        (2, set_raw("settings_not_map", (M, "bad_field"), settings=[["lr", 0.001]])),
        (2, set_raw("settings_int_key", (M, "not_msgpack"), settings={1: 0.001})),  # msgpack's strict_map_key
        # (without the token: no bit flip can turn one into an authorized, valid change)
        (25, lambda: wire_mutation(rng, ControlRequest(rid(), ["get", "set"][int(rng.integers(0, 2))],
                                                       any_settings(), ""), M, unexpected)),
        (1, lambda: Shot([b"junk", encode(ControlRequest(rid(), "get", {}, ""))], None, "multipart")),
    ]
    for _ in range(n):
        yield _weighted(rng, table)
