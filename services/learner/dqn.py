r"""The learner's maths: dueling double DQN with n-step targets, PER weights and DQfD margin loss.

Shapes: B = batch, D = state dim (408), A = actions (44).

Network (dueling)::
    h = MLP(s)                                   # [B, H]
    Q(s, a) = V(h) + Adv(h, a) - mean_a' Adv(h, a')  # [B, A]

Double-DQN n-step target (discount_i = gamma^{h_i}, 0 if the n-step window ended in a terminal)::
    a*_i = argmax_a Q_online(s'_i, a)            # [B]
    y_i  = r_i + discount_i * Q_target(s'_i, a*_i)  # [B]
    y_i  = clip(y_i, -c, c)                      # optional (clamp_targets)

Importance-weighted Huber TD loss (w_i from prioritized replay)::
    delta_i = Q_online(s_i, a_i) - y_i           # [B]
    L_TD = mean_i w_i * huber_k(delta_i),  huber_k(x) = x^2/2 if |x| <= k else k(|x| - k/2)

Large-margin behaviour cloning (DQfD) over the labelled rows E (margin m = BC_MARGIN, in Q units),
where a^E_i is the expert's choice on s_i: its own action on the rows it played and, with the
workers' EXPERT_LABELS, its answer on the network's states too (DAgger: the clone learns what to do
where its own mistakes take it, which the expert's rows never show)::
    L_BC = mean_{i in E} [ max_a (Q(s_i, a) + m * 1[a != a^E_i]) - Q(s_i, a^E_i) ]

Total loss L = L_TD + lambda_BC * L_BC, averaged over k micro-batches (gradient accumulation).
lambda_BC may decay with the run's global frames F (schedules.bc_weight; D = 0: constant)::
    lambda_BC(F) = BC_WEIGHT * max(f_min, 1 - F / D),  D = BC_WEIGHT_DECAY_FRAMES, f_min = BC_WEIGHT_MIN_FRACTION

Target network: soft  theta' <- (1 - tau) theta' + tau theta,  or hard  theta' <- theta.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tempest_common.network import DuelingQNetwork  # noqa: F401  (the network the maths trains)


@torch.no_grad()
def td_target(online: nn.Module, target: nn.Module, next_state: Tensor, reward: Tensor,
              discount: Tensor, clamp: float | None) -> Tensor:
    """Double DQN: action from the online net, value from the target net. Returns y [B] (float32)."""
    a_star = online(next_state).argmax(dim=1, keepdim=True)  # [B, 1]
    q_next = target(next_state).gather(1, a_star).squeeze(1).float()  # [B]
    y = reward.float() + discount.float() * q_next  # [B]
    if clamp is not None:
        y = y.clamp(-clamp, clamp)
    return y


def td_loss(q_taken: Tensor, target: Tensor, weight: Tensor, huber_delta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Importance-weighted Huber loss. Returns (scalar loss, td_error [B] detached)."""
    td_error = q_taken - target  # [B]
    per_row = F.huber_loss(q_taken, target, reduction="none", delta=huber_delta)  # [B]
    return (weight * per_row).mean(), td_error.detach()


def bc_margin_loss(q: Tensor, expert_action: Tensor, margin: float = 0.8) -> Tensor:
    """DQfD large-margin loss over labelled rows (q [B, A], expert_action [B] long, -1 = no label);
    0 when there are none."""
    labelled = expert_action >= 0  # [B]
    if not bool(labelled.any()):
        return q.new_zeros(())
    q_e, a_e = q[labelled], expert_action[labelled]  # [E, A], [E]
    margins = torch.full_like(q_e, margin).scatter_(1, a_e.unsqueeze(1), 0.0)  # [E, A]
    q_expert = q_e.gather(1, a_e.unsqueeze(1)).squeeze(1)  # [E]
    return ((q_e + margins).max(dim=1).values - q_expert).mean()


@torch.no_grad()
def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * online, in place."""
    t_params = [p for p in target.parameters()]
    o_params = [p for p in online.parameters()]
    torch._foreach_lerp_(t_params, o_params, tau)


@torch.no_grad()
def target_distance(online: nn.Module, target: nn.Module) -> float:
    """||theta - theta'|| / ||theta||: how far the bootstrap network lags the online one (0 = a copy)."""
    diff = sum(float((o - t).float().pow(2).sum()) for o, t in zip(online.parameters(), target.parameters()))
    norm = sum(float(o.float().pow(2).sum()) for o in online.parameters())
    return math.sqrt(diff / norm) if norm > 0 else 0.0


@torch.no_grad()
def hard_update(target: nn.Module, online: nn.Module) -> None:
    target.load_state_dict(online.state_dict())


@dataclass
class StepStats:
    loss: float
    grad_norm: float  # pre-clip global L2
    clip_ratio: float  # post-clip / pre-clip norm, 1.0 = no clipping
    td_error: Tensor  # [sum B_j], abs, detached
    q_min: float
    q_max: float
    q_mean: float
    nonfinite: bool
    applied: bool
    target_clamped_share: float = 0.0  # rows whose TD target sat at the clamp (CLAMP_TARGETS)


@dataclass
class Batch:
    state: Tensor  # [B, D]
    action: Tensor  # [B] long
    reward: Tensor  # [B]
    discount: Tensor  # [B] gamma^h, 0 if terminal
    next_state: Tensor  # [B, D]
    weight: Tensor  # [B] importance-sampling weights
    expert_action: Tensor  # [B] long: the expert's choice on state, -1 where unlabelled


def train_step(online: nn.Module, target: nn.Module, optimizer: torch.optim.Optimizer,
               micro_batches: list[Batch], max_grad_norm: float, clamp: float | None,
               bc_weight: float = 0.0, scaler=None, autocast_dtype=None, bc_margin: float = 0.8) -> StepStats:
    """One optimizer step over k micro-batches; the gradient is that of the mean loss over them.
    bc_weight is lambda_BC in force for this step (already decayed), bc_margin the DQfD margin m."""
    k = len(micro_batches)
    params = [p for p in online.parameters() if p.requires_grad]
    device_type = params[0].device.type
    optimizer.zero_grad(set_to_none=True)
    total_loss, td_errors, q_all, clamped = 0.0, [], [], 0
    for mb in micro_batches:
        ctx = (torch.autocast(device_type=device_type, dtype=autocast_dtype)
               if autocast_dtype is not None else contextlib.nullcontext())
        with ctx:
            q = online(mb.state)  # [B, A]
            y = td_target(online, target, mb.next_state, mb.reward, mb.discount, clamp)  # [B]
        q = q.float()
        if clamp is not None:
            clamped += int((y.abs() >= clamp).sum())
        q_taken = q.gather(1, mb.action.unsqueeze(1)).squeeze(1)  # [B]
        loss, td_err = td_loss(q_taken, y, mb.weight.float())
        if bc_weight > 0.0:
            loss = loss + bc_weight * bc_margin_loss(q, mb.expert_action, bc_margin)
        scaled = loss / k
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total_loss += float(scaled.detach())
        td_errors.append(td_err.abs())
        q_all.append(q.detach())

    if scaler is not None:
        scaler.unscale_(optimizer)
    clipping = max_grad_norm > 0
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm if clipping else math.inf))
    clip_ratio = min(1.0, max_grad_norm / (norm + 1e-6)) if clipping else 1.0
    qs = torch.cat(q_all)  # [sum B_j, A]
    nonfinite = not (math.isfinite(total_loss) and math.isfinite(norm))
    if nonfinite:
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.update()
    else:
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return StepStats(loss=total_loss, grad_norm=norm, clip_ratio=clip_ratio,
                     td_error=torch.cat(td_errors), q_min=float(qs.min()), q_max=float(qs.max()),
                     q_mean=float(qs.mean()), nonfinite=nonfinite, applied=not nonfinite,
                     target_clamped_share=clamped / len(qs))
