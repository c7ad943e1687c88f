"""msgpack wire format for `tempest_common.messages`; the rules are in docs/design.md, "Messages".

Never pickle: a worker must not be able to run code in the learner by sending bytes.  Map order
is fixed and floats always travel as float64, so equal messages give equal bytes (the golden tests
in tests/data/golden/ rely on that).  Arrays are plain {"dtype", "shape", "data"} maps (no msgpack
ext types, so any msgpack client can read them).  Decoded arrays are zero-copy, READ-ONLY views on
the received bytes: call `.copy()` before writing into one (or before `torch.from_numpy`, which
warns on read-only arrays).  `decode` raises only `MessageError`, whose `reason` labels the
"malformed message dropped" counters.
"""
from __future__ import annotations

import functools
import math
import zlib
from typing import Any

import msgpack

import numpy as np

from tempest_common.game_state import FIELD_SPECS, GameState
from tempest_common.messages import MESSAGE_TYPES, Message, field_specs

# A message class's fields never change: look them up once (dataclasses.fields() per message was
# a few us of every small request / reply).
_field_specs = functools.lru_cache(maxsize=None)(field_specs)

SCHEMA_VERSION = 3
# Older schema versions still read, per message kind: the fields that version lacks (the message
# class derives them); () = the same fields as today, only the version number is older.  A kind
# not listed under a version is refused as "wrong_version".
# Schema 1 had no expert labels (TransitionBatch.expert_action) and no row numbers (first_row: -1,
# not numbered); the replay stores transition batches as wire bytes, so a stored schema-1 chunk
# must stay readable.  Schema 2 had no reward settings in heartbeats (Heartbeat.reward_scale,
# reward_clip, death_penalty, survival_bonus: NaN, unknown); every other schema-2 kind has
# today's fields and stays readable (schema-2 chunks in Redis; peers of the previous release).
# Kinds added after schema 2 are not in its list: no schema-2 bytes of them exist.
_SCHEMA_2_SAME = ("transitions", "episode", "expert_request", "expert_reply", "sample_request", "sample_reply",
                  "priority_update", "ack", "weights", "control_request", "control_reply")
UPGRADES: dict[int, dict[str, tuple[str, ...]]] = {
    1: {"transitions": ("expert_action", "first_row")},
    2: {**{kind: () for kind in _SCHEMA_2_SAME},
        "heartbeat": ("reward_scale", "reward_clip", "death_penalty", "survival_bonus")},
}

# Every MessageError.reason, so metrics can pre-create their label values.
REASONS = ("not_msgpack", "not_a_map", "wrong_version", "unknown_kind", "unexpected_kind",
           "bad_field", "bad_array", "bad_game_state")

# The dtype allow-list: canonical wire string -> dtype.  No object/void/structured dtypes, so a
# peer can never make us build Python objects from bytes.
_DTYPES = {np.dtype(n).str: np.dtype(n) for n in (
    "bool", "uint8", "int8", "uint16", "int16", "int32", "uint32", "int64", "uint64",
    "float16", "float32", "float64")}
_MAX_NDIM = 8
_INT_MIN, _INT_MAX = -(2 ** 63), 2 ** 64 - 1  # what msgpack can carry
_SCALARS = (type(None), bool, int, float, str)  # allowed values of a "dict" field


class MessageError(ValueError):
    """A message that cannot be encoded or decoded; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def _bad(where: str, what: str, value: Any = None, reason: str = "bad_field") -> MessageError:
    got = "" if value is None else f", got {type(value).__name__}"
    return MessageError(reason, f"{where}: expected {what}{got}")


def _py(v: Any) -> Any:
    """numpy scalars -> Python scalars, so senders may pass np.int64 etc. (encode side only)."""
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


# -- scalar fields: one checker serves both directions (encode runs _py first) -----------------
def _int(v, where):
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(where, "int", v)
    if not _INT_MIN <= v <= _INT_MAX:
        raise MessageError("bad_field", f"{where}: int {v} does not fit 64 bits")
    return v


def _float(v, where):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(where, "float", v)
    return float(v)  # ints are accepted (a peer may send 0 for 0.0)


def _str(v, where):
    if not isinstance(v, str):
        raise _bad(where, "str", v)
    return v


def _bool(v, where):
    if not isinstance(v, bool):
        raise _bad(where, "bool", v)
    return v


def _optional_str(v, where):
    return v if v is None else _str(v, where)


def _dict(v, where):
    if not isinstance(v, dict):
        raise _bad(where, "map of str -> scalar", v)
    out = {}
    for k, x in v.items():
        x = _py(x)
        if not isinstance(k, str) or not isinstance(x, _SCALARS):
            raise _bad(f"{where}[{k!r}]", "str key and scalar value", x)
        if isinstance(x, int) and not isinstance(x, bool):
            _int(x, f"{where}[{k!r}]")
        out[k] = x
    return out


# -- arrays ----------------------------------------------------------------------------------
def _enc_array(a, where):
    if not isinstance(a, np.ndarray):
        raise _bad(where, "numpy array", a, "bad_array")
    le = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    if le.str not in _DTYPES:
        raise MessageError("bad_array", f"{where}: dtype {a.dtype} not allowed on the wire")
    a = np.ascontiguousarray(a, dtype=le)
    # A byte view, not a.tobytes(): msgpack copies it into its buffer anyway (same bytes), so
    # a multi-MB array is copied once instead of twice.
    return {"dtype": le.str, "shape": list(a.shape), "data": memoryview(a.reshape(-1).view(np.uint8))}


def _dec_array(obj, where):
    if not isinstance(obj, dict) or set(obj) != {"dtype", "shape", "data"}:
        raise _bad(where, "array map {dtype, shape, data}", obj, "bad_array")
    dt = _DTYPES.get(obj["dtype"]) if isinstance(obj["dtype"], str) else None
    if dt is None:
        raise MessageError("bad_array", f"{where}: dtype {obj['dtype']!r} not in {sorted(_DTYPES)}")
    shape, data = obj["shape"], obj["data"]
    if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise MessageError("bad_array", f"{where}: shape must be <= {_MAX_NDIM} non-negative ints, got {shape!r}")
    if not isinstance(data, bytes):
        raise _bad(where + ".data", "bytes", data, "bad_array")
    n = math.prod(shape)  # Python ints: no overflow for absurd shapes
    if len(data) != n * dt.itemsize:
        raise MessageError("bad_array", f"{where}: {len(data)} bytes of data, shape {shape} {dt} "
                                        f"needs {n * dt.itemsize}")
    try:
        arr = np.frombuffer(data, dtype=dt).reshape(shape)
    except (ValueError, OverflowError) as e:  # e.g. a zero-size array with a huge other dim
        raise MessageError("bad_array", f"{where}: {e}") from None
    # numpy bools must be 0/1 bytes; anything else compares inconsistently later.
    if dt == np.bool_ and n and np.frombuffer(data, np.uint8).max() > 1:
        raise MessageError("bad_array", f"{where}: bool data must be 0/1 bytes")
    return arr


def _arrays(array_codec):
    """The codec of a map of str -> array, from one array's codec (either direction)."""
    def codec(v, where):
        if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
            raise _bad(where, "map of str -> array", v, "bad_array")
        return {k: array_codec(a, f"{where}[{k!r}]") for k, a in v.items()}
    return codec


# -- GameState ---------------------------------------------------------------------------------
# A batch travels packed: one little-endian record per state with the fields in FIELD_SPECS order
# (a numpy structured dtype), so a batch is a single bytes blob and decoding is a view.
# Field by field it cost ~200 us to encode and ~250 us to decode one state; packed, ~20 us each.
_GS_DTYPE = np.dtype([(name, np.dtype(dt).newbyteorder("<"), shape) for name, (dt, shape) in FIELD_SPECS.items()])
_GS_LAYOUT = zlib.crc32(repr(_GS_DTYPE.descr).encode())  # both ends must agree on the layout
_GS_BOOLS = [name for name, (dt, _) in FIELD_SPECS.items() if np.dtype(dt) == np.bool_]
# byte offsets, within one record, of every bool: decode checks them all with one fancy index
# (a loop over the bool fields cost ~45 us a request)
_GS_BOOL_BYTES = np.array([_GS_DTYPE.fields[name][1] + i for name in _GS_BOOLS
                           for i in range(math.prod(FIELD_SPECS[name][1]))], np.intp)
# on a little-endian host the record fields already have GameState's dtypes, so decode can build
# the GameState from the zero-copy field views directly (a per-field asarray cost ~18 us)
_GS_NATIVE = all(_GS_DTYPE.fields[name][0].base == np.dtype(dt) for name, (dt, _) in FIELD_SPECS.items())
# Expected dtype object and per-state shape of every field, built once: `np.dtype(name)` on every
# call made the encode check ~25 us of every request.
_GS_SPECS = [(name, np.dtype(dt), tuple(per_state)) for name, (dt, per_state) in FIELD_SPECS.items()]


@functools.lru_cache(maxsize=64)
def _gs_signature(batch: int) -> list:
    """(type, dtype, shape) of every field of a valid batch of `batch` states, in FIELD_SPECS order."""
    return [(np.ndarray, dtype, (batch, *per_state)) for _, dtype, per_state in _GS_SPECS]


def _check_game_state(arrays: dict, where: str) -> None:
    """The full check behind _enc_game_state's fast path: names the first bad field."""
    batch = None
    for name, dtype, per_state in _GS_SPECS:
        a = arrays[name]
        if not isinstance(a, np.ndarray) or a.dtype != dtype or a.ndim < 1 or a.shape[1:] != per_state:
            raise MessageError("bad_game_state", f"{where}.{name}: expected {dtype} [B, *{per_state}], "
                                                f"got {getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")
        if batch is not None and a.shape[0] != batch:
            raise MessageError("bad_game_state", f"{where}.{name}: {a.shape[0]} states, other fields have {batch}")
        batch = a.shape[0]


def _enc_game_state(v, where):
    if not isinstance(v, GameState):
        raise _bad(where, "GameState", v, "bad_game_state")
    arrays = v.to_arrays()
    # fast path: one list comparison instead of _check_game_state's ~8 checks per field; anything
    # unexpected (subclasses included) goes through the full check and its exact error message
    g = arrays["mode"]
    if type(g) is not np.ndarray or g.ndim != 1 \
            or [(type(a), a.dtype, a.shape) for a in arrays.values()] != _gs_signature(g.shape[0]):
        _check_game_state(arrays, where)
    records = np.empty(g.shape[0], _GS_DTYPE)
    for name, a in arrays.items():
        records[name] = a
    return {"layout": _GS_LAYOUT, "n": len(records), "data": records.tobytes()}


def _dec_game_state(v, where):
    if not isinstance(v, dict) or set(v) != {"layout", "n", "data"}:
        raise _bad(where, "packed GameState {layout, n, data}", v, "bad_game_state")
    if v["layout"] != _GS_LAYOUT:
        raise MessageError("bad_game_state", f"{where}: GameState layout {v['layout']!r} differs from "
                                            f"this side's {_GS_LAYOUT} (peers run different versions)")
    n, data = v["n"], v["data"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 0 or not isinstance(data, bytes) \
            or len(data) != n * _GS_DTYPE.itemsize:
        raise MessageError("bad_game_state", f"{where}: {n!r} states need {_GS_DTYPE.itemsize} bytes each, "
                                            f"got {len(data) if isinstance(data, bytes) else type(data).__name__}")
    records = np.frombuffer(data, _GS_DTYPE, count=n)
    if n and np.frombuffer(data, np.uint8).reshape(n, _GS_DTYPE.itemsize)[:, _GS_BOOL_BYTES].max() > 1:
        for name in _GS_BOOLS:  # rare: find the field to name in the error
            if np.any(records[name].view(np.uint8) > 1):
                raise MessageError("bad_game_state", f"{where}.{name}: booleans must be 0 or 1")
    if not _GS_NATIVE:  # a big-endian host: one copy in GameState's (native) byte order
        records = records.astype(_GS_DTYPE.newbyteorder("="))
    return GameState(**{name: records[name] for name in FIELD_SPECS})


# wire type -> (encode, decode)
_CODECS = {
    "int": (_int, _int), "float": (_float, _float), "str": (_str, _str),
    "bool": (_bool, _bool), "optional_str": (_optional_str, _optional_str), "dict": (_dict, _dict),
    "array": (_enc_array, _dec_array), "arrays": (_arrays(_enc_array), _arrays(_dec_array)),
    "game_state": (_enc_game_state, _dec_game_state),
}


def _validate(msg: Message) -> None:
    try:
        msg.validate()
    except Exception as e:  # validate() may trip over any bad value: report, never crash
        raise MessageError("bad_field", f"{msg.KIND}: {e}") from None


def encode(msg: Message) -> bytes:
    """Message -> msgpack bytes.  Raises MessageError for a message that decode would reject."""
    cls = type(msg)
    if MESSAGE_TYPES.get(getattr(cls, "KIND", None)) is not cls:
        raise MessageError("unknown_kind", f"{cls.__name__} is not a registered message")
    out: dict[str, Any] = {"v": SCHEMA_VERSION, "kind": cls.KIND}
    for name, meta in _field_specs(cls):
        enc = _CODECS[meta["wire"]][0]
        value = getattr(msg, name)
        out[name] = enc(value if meta["wire"] in ("array", "arrays", "game_state") else _py(value),
                        f"{cls.KIND}.{name}")
    _validate(msg)
    try:
        return msgpack.packb(out, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:  # belt and braces: checked above
        raise MessageError("bad_field", f"{cls.KIND}: {e}") from None


def decode(data: bytes, expect: type | tuple[type, ...] | None = None) -> Message:
    """msgpack bytes -> Message.  `expect`: the class(es) this socket accepts; anything else is
    a MessageError("unexpected_kind").  Never raises anything but MessageError."""
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as e:  # msgpack raises many types (ExtraData, FormatError, Unicode...)
        raise MessageError("not_msgpack", f"{type(e).__name__}: {e}") from None
    try:
        return _decode_obj(obj, expect)
    except MessageError:
        raise
    except Exception as e:  # a bug in a checker must still count as a dropped message
        raise MessageError("bad_field", f"{type(e).__name__}: {e}") from None


def _decode_obj(obj: Any, expect) -> Message:
    if not isinstance(obj, dict):
        raise MessageError("not_a_map", f"expected a msgpack map, got {type(obj).__name__}")
    v, kind = obj.get("v"), obj.get("kind")
    if isinstance(v, bool) or not isinstance(v, int) or (
            v != SCHEMA_VERSION and not (isinstance(kind, str) and kind in UPGRADES.get(v, {}))):
        raise MessageError("wrong_version", f"got version {v!r}, expected {SCHEMA_VERSION}")
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MessageError("unknown_kind", f"unknown message kind {kind!r}")
    if expect is not None and not issubclass(cls, expect):
        names = [c.__name__ for c in (expect if isinstance(expect, tuple) else (expect,))]
        raise MessageError("unexpected_kind", f"got {cls.__name__}, expected one of {names}")
    specs = _field_specs(cls)
    if v != SCHEMA_VERSION:   # an older version: without the fields it lacks (the class derives them)
        lacks = UPGRADES[v][kind]
        specs = [(n, meta) for n, meta in specs if n not in lacks]
    missing = [n for n, _ in specs if n not in obj]
    extra = set(obj) - {"v", "kind"} - {n for n, _ in specs}
    if missing or extra:
        raise MessageError("bad_field", f"{kind}: missing fields {missing}, unknown fields {sorted(map(str, extra))}")
    values = {n: _CODECS[meta["wire"]][1](obj[n], f"{kind}.{n}") for n, meta in specs}
    msg = cls(**values)
    _validate(msg)
    return msg
