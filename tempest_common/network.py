"""The Q-network, shared by the learner (which trains it) and the emulator workers (which act
with the published weights).

    h = MLP(s): per hidden width H_i, Linear -> ReLU, or Linear -> LayerNorm -> ReLU (layer_norm)
    Q(s, a) = V(h) + Adv(h, a) - mean_a' Adv(h, a')                     # [B, A]

Parameter names (what the published weights carry): the trunk's Linear layers are trunk.{2i}
(plain) or trunk.{3i} with their LayerNorm at trunk.{3i+1} (layer_norm); a ReLU has none, so
"trunk.1.weight" exists exactly when the network has LayerNorm.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

# The learner's checkpoint file format (services/learner/checkpoint.py writes it; the evaluator
# reads the network out of it): readers refuse a newer one with a clear line instead of guessing.
CHECKPOINT_FORMAT_VERSION = 2


class DuelingQNetwork(nn.Module):
    def __init__(self, state_dim: int, num_actions: int, hidden: tuple[int, ...] = (512, 512, 256),
                 layer_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        width = state_dim
        for h in hidden:
            layers += [nn.Linear(width, h), *([nn.LayerNorm(h)] if layer_norm else []), nn.ReLU()]
            width = h
        self.state_dim, self.num_actions, self.layer_norm = state_dim, num_actions, layer_norm
        self.trunk = nn.Sequential(*layers)
        self.value = nn.Linear(width, 1)
        self.advantage = nn.Linear(width, num_actions)

    def forward(self, x: Tensor) -> Tensor:
        first = self.trunk[0] if len(self.trunk) else self.value
        h = self.trunk(x.to(first.weight.dtype))  # [B, H]
        v = self.value(h)  # [B, 1]
        adv = self.advantage(h)  # [B, A]
        return v + adv - adv.mean(dim=1, keepdim=True)  # [B, A]

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def layer_norm_from_state_dict(state: dict) -> bool:
    """Whether the weights are those of a network with LayerNorm (trunk.1 has parameters)."""
    return "trunk.1.weight" in state


def hidden_from_state_dict(state: dict) -> tuple[int, ...]:
    """Hidden widths of a DuelingQNetwork from its parameter shapes (trunk.{2i} or trunk.{3i}.weight)."""
    stride = 3 if layer_norm_from_state_dict(state) else 2
    widths, i = [], 0
    while f"trunk.{i}.weight" in state:
        widths.append(int(np.shape(state[f"trunk.{i}.weight"])[0]))
        i += stride
    return tuple(widths)


def shape_from_state_dict(state: dict) -> tuple[int, tuple[int, ...], int, bool]:
    """(state dim, hidden widths, actions, LayerNorm) of the network these weights belong to."""
    hidden = hidden_from_state_dict(state)
    first = state["trunk.0.weight"] if hidden else state["value.weight"]
    return (int(np.shape(first)[1]), hidden, int(np.shape(state["advantage.weight"])[0]),
            layer_norm_from_state_dict(state))


def network_from_state_dict(state: dict) -> DuelingQNetwork:
    """Build a network of the right shape (and layout) from published weights (numpy arrays) and load them."""
    state_dim, hidden, actions, layer_norm = shape_from_state_dict(state)
    net = DuelingQNetwork(state_dim, actions, hidden, layer_norm=layer_norm)
    net.load_state_dict({k: torch.as_tensor(np.array(v, np.float32)) for k, v in state.items()})
    return net.eval()
