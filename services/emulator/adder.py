"""TransitionAdder: transition records -> TransitionBatch messages (pure: no I/O).

State vectors are encoded per batch from each record's RAM and its previous decision tick's RAM
(no previous tick: zero velocities), which costs a fraction of encoding tick by tick.
Rows are numbered per stream (TransitionBatch.first_row: 0, then each batch's first row follows
the last sent one's: `unsent` takes a refused batch's numbers back), so the replay sees a batch
lost or repeated after the hand-off as a gap or a duplicate.
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
        self.next_row = 0   # the stream-local number of the next batch's first row

    @property
    def pending(self) -> int:
        """Records waiting for a batch: what a kill -9 of the worker loses before they are numbered."""
        return len(self._records)

    def add(self, records: list[Record]) -> TransitionBatch | None:
        """Queue records; a batch once `batch_size` of them are waiting."""
        self._records.extend(records)
        return self.flush() if len(self._records) >= self.batch_size else None

    def unsent(self, batch: TransitionBatch) -> None:
        """The last batch did not leave (the worker counts it dropped): its numbers go to the next
        batch, so first_row numbers the rows handed to the replay's socket and a gap the replay
        sees is loss after the hand-off, never the worker's own (already counted) drops."""
        assert batch.first_row + batch.num_rows() == self.next_row, "only the last batch can be unsent"
        self.next_row = batch.first_row

    def flush(self) -> TransitionBatch | None:
        """Every waiting record as one batch (None if there are none)."""
        if not self._records:
            return None
        rs, self._records = self._records, []
        first_row, self.next_row = self.next_row, self.next_row + len(rs)
        rams = np.stack([r.ram for r in rs])
        prev = np.stack([r.ram if r.prev_ram is None else r.prev_ram for r in rs])
        states = encode_state(decode_ram(rams), decode_ram(prev))
        column = lambda name, dtype: np.array([getattr(r, name) for r in rs], dtype)  # noqa: E731
        return TransitionBatch(
            self.stream_id, self.worker_id, column("episode_id", np.int64), column("step", np.int32),
            column("actor", np.uint8), column("action", np.int16), column("reward_game", np.float32),
            column("reward_shaping", np.float32), column("terminal", bool), column("truncated", bool),
            states.astype(self.state_dtype), column("expert_action", np.int16), first_row)
