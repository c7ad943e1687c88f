"""Q on a fixed probe set of states (issue 16).

The batch Q the learner exports (tempest_learner_q_*) is over prioritized samples: which states
are drawn moves with the TD errors, so the batch Q moves when only the sampling does.  The probe
set is fixed: the first PROBE_STATES states the learner trains on (rows of the applied steps'
batches, in order), kept for the run (checkpointed: a resumed run measures the same states) and
measured every PROBE_EVERY_STEPS optimizer steps with one no-grad forward pass in float32.
The figure per state is max_a Q_online(s, a): the greedy value (V-like), not the Q of one action.
Nothing is measured until the set is whole, so every value of the series is over the same states.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

log = logging.getLogger("learner.probe")
PROBE_STATES = 256
PROBE_EVERY_STEPS = 50


class ProbeSet:
    def __init__(self, size: int = PROBE_STATES, every: int = PROBE_EVERY_STEPS):
        if size < 1 or every < 1:
            raise ValueError(f"probe size and period must be >= 1, got {size}, {every}")
        self.size, self.every = size, every
        self._parts: list[np.ndarray] = []   # float32 [n_i, D] while collecting
        self.states: np.ndarray | None = None  # float32 [size, D] once whole
        self._on_device: torch.Tensor | None = None

    @property
    def collected(self) -> int:
        return self.size if self.states is not None else sum(len(p) for p in self._parts)

    def offer(self, states: np.ndarray) -> bool:
        """Keep rows of `states` [B, D] (float16 or float32) until the set is whole; True when this
        call made it whole."""
        if self.states is not None:
            return False
        take = np.asarray(states)[: self.size - self.collected]
        if take.ndim != 2 or (self._parts and take.shape[1] != self._parts[0].shape[1]):
            raise ValueError(f"probe states must be [B, D] with one D, got {take.shape}")
        if len(take):
            self._parts.append(take.astype(np.float32))   # a copy: the replies' arrays are views
        if self.collected < self.size:
            return False
        self.states, self._parts = np.concatenate(self._parts), []
        return True

    @torch.no_grad()
    def measure(self, online: nn.Module) -> tuple[float, float, float] | None:
        """(min, max, mean) over the probe states of max_a Q_online(s, a); None until the set is whole."""
        if self.states is None:
            return None
        device = next(online.parameters()).device
        if self._on_device is None or self._on_device.device != device:
            self._on_device = torch.from_numpy(self.states).to(device)
        v = online(self._on_device).float().max(dim=1).values   # [size]: greedy value per state
        lo, hi, mean = torch.stack([v.min(), v.max(), v.mean()]).tolist()   # one transfer
        return lo, hi, mean

    def after_step(self, step: int, online: nn.Module, replies, metrics) -> None:
        """The learner's hook after each applied optimizer step `step` (1, 2, ...) on `replies`
        (SampleReply micro-batches): collect, and every `every` steps (and on the step that makes
        the set whole) export the probe Q to `metrics` (LearnerMetrics.export_probe_q)."""
        filled = False
        for reply in replies:
            filled = self.offer(reply.state) or filled
        if self.states is not None and (filled or step % self.every == 0):
            metrics.export_probe_q(self.measure(online))

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The set once whole (a float32 tensor: checkpoints load with weights_only); None before
        (a run resumed then collects afresh)."""
        return {"states": None if self.states is None else torch.from_numpy(self.states.copy())}

    def load_state_dict(self, state: dict | None, state_dim: int) -> None:
        """Take the saved set; a checkpoint without one (older, or saved before the set was whole)
        leaves this one collecting; a saved set of the wrong shape or not finite is not taken (logged)."""
        saved = state.get("states") if isinstance(state, dict) else None
        if saved is None:
            return
        states = torch.as_tensor(saved).detach().cpu().float().numpy()
        if states.ndim != 2 or states.shape[0] < 1 or states.shape[1] != state_dim or not np.isfinite(states).all():
            log.warning("checkpoint probe states of shape %s (STATE_DIM %d) not taken: collecting afresh",
                        tuple(states.shape), state_dim)
            return
        self.states, self._parts, self._on_device = states[: self.size].copy(), [], None
        if len(self.states) < self.size:   # PROBE_STATES grew since: the saved set is what there is
            log.info("checkpoint probe set of %d states (PROBE_STATES %d)", len(self.states), self.size)
