"""TransitionAdder: transition records -> TransitionBatch messages (pure: no I/O).

State vectors are encoded per batch from each record's RAM and its previous decision tick's RAM
(no previous tick: zero velocities), which costs a fraction of encoding tick by tick.
"""
from __future__ import annotations

import numpy as np

from tempest_common.game_state import decode_ram
from tempest_common.messages import TransitionBatch
from tempest_common.state_vector import encode_state

from .episodes import Record


class TransitionAdder:
    def __init__(self, stream_id: str, worker_id: str, batch_size: int, state_dtype: str = "float16"):
        self.stream_id, self.worker_id = stream_id, worker_id
        self.batch_size = batch_size
        self.state_dtype = np.dtype(state_dtype)
        self._records: list[Record] = []

    def add(self, records: list[Record]) -> TransitionBatch | None:
        """Queue records; a batch once `batch_size` of them are waiting."""
        self._records.extend(records)
        return self.flush() if len(self._records) >= self.batch_size else None

    def flush(self) -> TransitionBatch | None:
        """Every waiting record as one batch (None if there are none)."""
        if not self._records:
            return None
        rs, self._records = self._records, []
        rams = np.stack([r.ram for r in rs])
        prev = np.stack([r.ram if r.prev_ram is None else r.prev_ram for r in rs])
        states = encode_state(decode_ram(rams), decode_ram(prev))
        column = lambda name, dtype: np.array([getattr(r, name) for r in rs], dtype)  # noqa: E731
        return TransitionBatch(
            self.stream_id, self.worker_id, column("episode_id", np.int64), column("step", np.int32),
            column("actor", np.uint8), column("action", np.int16), column("reward_game", np.float32),
            column("reward_shaping", np.float32), column("terminal", bool), column("truncated", bool),
            states.astype(self.state_dtype), column("expert_action", np.int16))
