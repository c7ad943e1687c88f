"""Hostile input for the replay's PULL (transition batches) and ROUTER (sample requests,
priority updates); the Shot conventions are in hostile.py."""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np

from tempest_common.actions import NUM_ACTIONS
from tempest_common.messages import (ACTOR_EXPERT, MAX_BATCH_ROWS, PriorityUpdate, SampleRequest, TransitionBatch,
                                     expert_labels)
from tempest_common.wire import encode
from tests.fuzz.hostile import (
    REJECT, U64_MAX, I64_MAX, NAN, INF, REPLAY_MALFORMED, REPLAY_REFUSED, REPLAY_BAD_PRIORITIES,
    Shot, pack, wire_map, unchecked, array_map, wire_mutation, array_attack, weighted)


# -- replay PULL: TransitionBatch ------------------------------------------------------------------
def transitions(rng: np.random.Generator, rows: int, state_dim: int, stream: str = "fuzz",
                dtype=np.float16, state=None, **override) -> TransitionBatch:
    """A real-looking batch: one stream, steps in order, states in [0, 1], no terminal row;
    expert labels on the expert's rows (its action) and on most others (any action)."""
    actor = rng.integers(0, 4, rows).astype(np.uint8)
    action = rng.integers(0, NUM_ACTIONS, rows).astype(np.int16)
    z = {
        "stream_id": stream, "worker_id": "fuzz-worker",
        "episode_id": np.full(rows, int(rng.integers(0, 1000)), np.int64),
        "step": np.arange(rows, dtype=np.int32), "actor": actor, "action": action,
        "reward_game": rng.choice([0.0, 0.0, 0.0, 150.0], rows).astype(np.float32),
        "reward_shaping": np.full(rows, 0.01, np.float32),
        "terminal": np.zeros(rows, bool), "truncated": np.zeros(rows, bool),
        "state": rng.random((rows, state_dim)).astype(dtype) if state is None else state,
        "expert_action": np.where((actor != ACTOR_EXPERT) & (rng.random(rows) < 0.7),
                                  rng.integers(0, NUM_ACTIONS, rows), expert_labels(actor, action)).astype(np.int16),
    }
    z.update(override)
    return TransitionBatch(**z)


# every per-row field (expert_action since schema 2): what a batch of another row count replaces
ROW_FIELDS = tuple(f.name for f in dataclasses.fields(TransitionBatch) if f.metadata.get("rows"))


def schema1(obj: dict) -> bytes:
    """A wire map sent as schema 1 (before expert labels and row numbers): version 1, no
    expert_action, no first_row."""
    return pack({**{k: v for k, v in obj.items() if k not in ("expert_action", "first_row")}, "v": 1})


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
            obj = wire_map(transitions(rng, b, state_dim))
            for name, value in fields.items():   # bypass encode's own validation: build the map
                obj[name] = array_map(value) if isinstance(value, np.ndarray) else value
            return Shot([pack(obj)], expect, category)
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
        (3, build("expert_action_out_of_range", (M, "bad_field"), expert_action=lambda b: np.full(
            b, [NUM_ACTIONS, 32767, -2, -32768][int(rng.integers(0, 4))], np.int16))),
        (2, build("expert_action_int32", (M, "bad_field"), expert_action=lambda b: np.zeros(b, np.int32))),
        # schema 1 still reads (stored chunks, a worker mid-upgrade): labels derived; with labels
        # it is not schema 1 (an extra field)
        (2, lambda: Shot([schema1(wire_map(transitions(rng, rows(), state_dim)))], None, "schema1")),
        (2, lambda: Shot([pack({**wire_map(transitions(rng, rows(), state_dim)), "v": 1})], (M, "bad_field"),
                         "schema1_with_labels")),
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
            ("reward_game", np.float32), ("reward_shaping", np.float32), ("terminal", bool), ("truncated", bool),
            ("expert_action", np.int16))}, state=lambda b: np.zeros((0, state_dim), np.float16))),
        (2, lambda: Shot([encode(transitions(rng, rows(), state_dim, stream=rng.bytes(8).hex() * 4))], None,
                         "random_stream_id")),
        (5, lambda: array_attack(rng, wire_map(transitions(rng, rows(), state_dim)),
                                 ["episode_id", "state", "action", "terminal"][int(rng.integers(0, 4))], M)),
        (30, lambda: wire_mutation(rng, transitions(rng, rows(), state_dim), M, unexpected)),
        (1, lambda: Shot([b"junk frame", encode(transitions(rng, 2, state_dim))], None, "multipart")),
    ]
    for _ in range(n):
        yield weighted(rng, table)


def replay_pull_specials(rng: np.random.Generator, state_dim: int) -> Iterator[Shot]:
    """Rare, large ones (once each per flood): one-row batches with a 100 KB stream id (refused: the
    schema bounds names to MAX_NAME_CHARS), then batches of MAX_BATCH_ROWS + 1 rows (last: whether the replay
    refuses them as bad_field or its size limit cuts the connection, and with it what follows on
    that connection, depends on its limits)."""
    for i in range(LONG_ID_MESSAGES):
        yield Shot([unchecked(transitions(rng, 1, state_dim, stream=f"{i:06d}" + "s" * (LONG_ID_BYTES - 6)))],
                   (REPLAY_MALFORMED, "bad_field"), "long_stream_id")
    for _ in range(2):
        b = MAX_BATCH_ROWS + 1
        obj = wire_map(transitions(rng, 1, state_dim))
        big = transitions(rng, b, state_dim, dtype=np.float16)
        for name in ROW_FIELDS:
            obj[name] = array_map(getattr(big, name))
        yield Shot([pack(obj)], None, "rows_over_max")


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
            obj = wire_map(SampleRequest(rid(), 32, 3, 0.99, True, 0.4, 0.0))
            for name, v in (("batch_size", batch_size), ("n_step", n_step), ("gamma", gamma),
                            ("prioritized", prioritized), ("beta", beta), ("wait_s", wait_s)):
                if v is not None:
                    obj[name] = v() if callable(v) else v
            return Shot([pack(obj)], expect, category)
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
        (2, lambda: Shot([pack({**wire_map(PriorityUpdate(rid(), np.zeros(3, np.uint64), np.ones(3, np.float32))),
                                 "priority": array_map(np.ones(2, np.float32))})], (M, "bad_field"), "priority_rows_mismatch")),
        (2, lambda: Shot([pack({**wire_map(PriorityUpdate(rid(), np.zeros(3, np.uint64), np.ones(3, np.float32))),
                                 "index": array_map(np.zeros(3, np.float64))})], (M, "bad_field"), "priority_index_float")),
        (3, lambda: array_attack(rng, wire_map(PriorityUpdate(rid(), np.zeros(4, np.uint64), np.ones(4, np.float32))),
                                 ["index", "priority"][int(rng.integers(0, 2))], M)),
        (25, lambda: wire_mutation(rng, [SampleRequest(rid(), 32, 3, 0.99, True, 0.4, 0.0),
                                         PriorityUpdate(rid(), np.arange(4, dtype=np.uint64), np.ones(4, np.float32))]
                                   [int(rng.integers(0, 2))], M, unexpected)),
        (1, lambda: Shot([b"junk", encode(SampleRequest(rid(), 8, 1, 0.9, False, 0.4, 0.0))], None, "multipart")),
        # only transitions read as schema 1 (stored chunks); a schema-1 request is refused
        (1, lambda: Shot([pack({**wire_map(SampleRequest(rid(), 8, 1, 0.9, False, 0.4, 0.0)), "v": 1})],
                         (M, "wrong_version"), "schema1_request")),
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
        yield weighted(rng, table)


def replay_router_specials(rng: np.random.Generator, filled: int) -> Iterator[Shot]:
    """Rare, large ones: the largest sample (replies of MB), a priority update over its row limit."""
    for _ in range(3 if filled else 0):
        yield Shot([encode(SampleRequest(7, 1 << 16, 5, 0.99, True, 0.4, 0.0))], None, "largest_sample")
    for _ in range(2):
        k = (1 << 20) + 1
        yield Shot([encode(PriorityUpdate(8, np.zeros(k, np.uint64), np.ones(k, np.float32)))],
                   (REPLAY_REFUSED, "too_large"), "priority_rows_over_max")


