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
family's increase covers what was sent.  Nothing here talks to a socket.  This module has what
every endpoint shares (Shot, the counter names, mutations of any valid message); the generators
per endpoint are in hostile_replay.py (replay PULL and ROUTER) and hostile_services.py (expert,
learner inbox, learner control).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import msgpack
import numpy as np

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


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def wire_map(msg) -> dict:
    """The wire map of `msg` without encode's own checks (what a hostile peer can send)."""
    out = {"v": SCHEMA_VERSION, "kind": msg.KIND}
    for name, meta in _field_specs(type(msg)):
        out[name] = _CODECS[meta["wire"]][0](getattr(msg, name), name)
    return msgpack.unpackb(pack(out), raw=False)


def unchecked(msg) -> bytes:
    return pack(wire_map(msg))


def array_map(a: np.ndarray) -> dict:
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
        return Shot([pack(other)], (malformed, "not_a_map"), "not_a_map")
    if k == 6:
        obj["v"] = [0, SCHEMA_VERSION + 1, 99, -1, U64_MAX, I64_MIN, "2", None, True, 2.0][int(rng.integers(0, 10))]
        return Shot([pack(obj)], (malformed, "wrong_version"), "wrong_version")
    if k == 7:
        del obj["v"]
        return Shot([pack(obj)], (malformed, "wrong_version"), "no_version")
    if k == 8:
        obj["kind"] = ["", "EXPERT_REQUEST", "x" * 200, 5, None, "pickle", ["transitions"]][int(rng.integers(0, 7))]
        return Shot([pack(obj)], (malformed, "unknown_kind"), "unknown_kind")
    if k == 9:
        obj["kind"] = unexpected_kinds[int(rng.integers(0, len(unexpected_kinds)))]
        return Shot([pack(obj)], (malformed, "unexpected_kind"), "unexpected_kind")
    if k == 10:
        del obj[fields[int(rng.integers(0, len(fields)))]]
        return Shot([pack(obj)], (malformed, "bad_field"), "missing_field")
    if k == 11:
        obj["__class__"] = "os.system"
        return Shot([pack(obj)], (malformed, "bad_field"), "extra_field")
    if k == 12:     # a field of the wrong type: the reason follows the field's wire type
        name = fields[int(rng.integers(0, len(fields)))]
        wire = next(f.metadata["wire"] for f in type(valid).__dataclass_fields__.values() if f.name == name)
        obj[name] = {"array": "x", "arrays": 3, "game_state": [1], "optional_str": 5, "str": 5, "bool": 2,
                     "dict": [1, 2], "int": "1", "float": "1.0"}[wire]
        reason = {"array": "bad_array", "game_state": "bad_game_state"}.get(wire, "bad_field")
        return Shot([pack(obj)], (malformed, reason), "wrong_type")
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
    return Shot([pack(obj)], (malformed, reason), "array_" + ("huge_shape", "dtype", "ndim", "negative",
                                                                "overflow", "extra_byte")[k])


def weighted(rng: np.random.Generator, table: list[tuple[float, Callable[[], Shot]]]) -> Shot:
    w = np.array([t[0] for t in table], float)
    return table[int(rng.choice(len(table), p=w / w.sum()))][1]()


