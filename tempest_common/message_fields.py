"""The machinery under every message (messages.py): field declarations with their wire types
(`_f`, `_row`), the bounds on what decodes cleanly but could still do damage, and the `Message`
base class whose `validate()` checks them.  wire.py reads the declarations; messages.py declares
the messages with them.
"""
from __future__ import annotations

from dataclasses import field, fields
from typing import Any, ClassVar

import numpy as np

# Bounds on values that decode cleanly but could still do damage downstream (docs/design.md,
# "Hostile input").  Generous for the real game: a tick's reward is a few hundred points at most
# and the score has six BCD digits; a worker decides ~1,000 ticks per second.
MAX_ABS_REWARD = 1e6        # per row: n <= 100 such rows still sum far inside float32
MAX_BATCH_ROWS = 4096       # rows of one transition batch (workers send TRANSITION_BATCH = 64)
MAX_SCORE = 999_999         # the game's six BCD digits
MAX_COUNTER = 1 << 53       # frame and episode counters: exact as float64 (Prometheus' type)
MAX_NAME_CHARS = 256        # a str field (ids, names): services keep them (one per stream, worker)
MAX_TEXT_CHARS = 4096       # an optional_str field (an error's text)
MAX_DICT_ITEMS = 256        # entries of a dict field (settings, actor counts)
WIRE_TYPES = ("int", "float", "str", "bool", "array", "dict", "optional_str", "game_state", "arrays")
_FLOATS = ("float16", "float32")  # states may travel as float16 (docs/design.md, Messages)


def _f(wire: str, dtype: str | tuple[str, ...] | None = None, ndim: int | None = None, rows: bool = False):
    """Declare a field's wire type; for arrays: allowed dtype(s), ndim, and per-row (shares B)."""
    assert wire in WIRE_TYPES, wire
    dtypes = (dtype,) if isinstance(dtype, str) else dtype
    return field(metadata={"wire": wire, "dtypes": dtypes, "ndim": ndim, "rows": rows})


def _row(dtype, ndim: int = 1):
    return _f("array", dtype, ndim, rows=True)


def _check_size(kind: str, name: str, wire: str, value) -> None:
    """Strings and maps a service might keep (a stream id per stream, a worker id per worker) have
    a bounded size: a flood of 100 KB made-up ids once grew the replay by hundreds of MB."""
    if wire == "str" and len(value) > MAX_NAME_CHARS:
        raise ValueError(f"{kind}.{name}: {len(value)} characters, at most {MAX_NAME_CHARS}")
    if wire == "optional_str" and value is not None and len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{kind}.{name}: {len(value)} characters, at most {MAX_TEXT_CHARS}")
    if wire == "dict" and (len(value) > MAX_DICT_ITEMS or any(
            len(k) > MAX_NAME_CHARS or (isinstance(v, str) and len(v) > MAX_NAME_CHARS) for k, v in value.items())):
        raise ValueError(f"{kind}.{name}: at most {MAX_DICT_ITEMS} entries of at most {MAX_NAME_CHARS} characters")


class Message:
    """Base: `KIND` is the wire "kind" string; `validate()` raises ValueError on a bad message."""
    KIND: ClassVar[str] = ""

    def validate(self) -> None:
        batch = None
        for f in fields(self):
            meta, value = f.metadata, getattr(self, f.name)
            if meta["wire"] in ("str", "optional_str", "dict"):
                _check_size(self.KIND, f.name, meta["wire"], value)
            if meta["wire"] != "array":
                continue
            if not isinstance(value, np.ndarray):
                raise ValueError(f"{self.KIND}.{f.name}: expected a numpy array, got {type(value).__name__}")
            if meta["dtypes"] and value.dtype not in [np.dtype(d) for d in meta["dtypes"]]:
                raise ValueError(f"{self.KIND}.{f.name}: dtype {value.dtype} not in {list(meta['dtypes'])}")
            if meta["ndim"] is not None and value.ndim != meta["ndim"]:
                raise ValueError(f"{self.KIND}.{f.name}: expected {meta['ndim']}-D, got shape {value.shape}")
            if meta["rows"]:
                if batch is not None and value.shape[0] != batch[1]:
                    raise ValueError(f"{self.KIND}: {f.name} has {value.shape[0]} rows but {batch[0]} has {batch[1]}")
                batch = batch or (f.name, value.shape[0])

    def num_rows(self) -> int:
        """Batch size B (rows of the first per-row array); 1 for messages without rows.
        (Not __len__: an empty batch would make the message falsy.)"""
        for f in fields(self):
            if f.metadata["rows"]:
                return int(getattr(self, f.name).shape[0])
        return 1


_FROZEN = dict(frozen=True, eq=False)


def field_specs(cls: type[Message]) -> list[tuple[str, dict[str, Any]]]:
    """[(field name, metadata)] in wire order."""
    return [(f.name, f.metadata) for f in fields(cls)]
